#!/usr/bin/env node
// A Z-Wave JS mock controller with mock nodes behind a TCP "serial port" on loopback, for tests.
// Like zwave-js's own bin/mock-server.cjs, but with no mDNS advertisement (nothing leaves
// loopback), nodes described in a JSON file, and reports injected from the test over stdin:
//
//   node zwavejs_mock.cjs --port PORT --config nodes.json
//   stdin, one JSON object a line:
//     {"op": "sensor", "node": 2, "endpoint": 0, "type": 1, "scale": 0, "value": 21.5}
//     {"op": "meter", "node": 3, "type": 1, "scale": 0, "value": 12.5}
//     {"op": "notification", "node": 4, "type": 5, "event": 2}
//     {"op": "battery", "node": 2, "level": 80}
//     {"op": "binary_switch", "node": 3, "value": true}
//     {"op": "include", "node": 9, "capabilities": {...}}   the next inclusion finds this node
//   stdout: "listening PORT" once the port is open, "ok N" after each stdin line N, "dsk ID DSK"
//   for each S2 node (the DSK printed on its label).
//
// NODE_PATH must reach the node_modules of packaging/zwave-js (the tests set it).
"use strict";
const net = require("node:net");
const fs = require("node:fs");
const readline = require("node:readline");
const core = require("@zwave-js/core");
const cc = require("@zwave-js/cc");
const serial = require("@zwave-js/serial");
const serialMock = require("@zwave-js/serial/mock");
const testing = require("@zwave-js/testing");
const zwTesting = require("zwave-js/Testing");

const args = process.argv.slice(2);
const arg = (name) => {
	const i = args.indexOf(name);
	return i === -1 ? undefined : args[i + 1];
};
const port = parseInt(arg("--port") ?? "0");
const config = JSON.parse(fs.readFileSync(arg("--config"), "utf8"));
const hexKey = (hex) => Buffer.from(hex, "hex");

function ccName(name) {
	const id = core.CommandClasses[name];
	if (id === undefined) throw new Error(`unknown command class ${name}`);
	return id;
}

// {"Multilevel Sensor": {"version": 11, ...caps}} -> [{ccId, isSupported, version, ...caps}]
function commandClasses(spec) {
	return Object.entries(spec ?? {}).map(([name, caps]) => ({
		ccId: ccName(name),
		isSupported: true,
		version: 1,
		...caps,
	}));
}

function nodeOptions(spec) {
	const { commandClasses: ccs, endpoints, securityClasses, ...capabilities } = spec.capabilities ?? {};
	return {
		id: spec.id,
		capabilities: {
			...capabilities,
			commandClasses: commandClasses(ccs),
			endpoints: (endpoints ?? []).map((ep) => ({ ...ep, commandClasses: commandClasses(ep.commandClasses) })),
			securityClasses: new Set((securityClasses ?? []).map((name) => core.SecurityClass[name])),
		},
	};
}

async function main() {
	const { serial: serialPort, port: mockPort } = await serialMock.createAndOpenMockedZWaveSerialPort();
	const keys = config.securityKeys ?? {};
	const securityKeys = Object.fromEntries(Object.entries(keys).map(([k, v]) => [k, hexKey(v)]));
	const controller = await testing.MockController.create({
		homeId: config.homeId ?? 0x7e570001,
		ownNodeId: 1,
		mockPort,
		serial: serialPort,
		securityKeys,
	});
	controller.defineBehavior(...zwTesting.createDefaultMockControllerBehaviors());
	const nodes = new Map();
	for (const spec of config.nodes ?? []) {
		const node = await testing.MockNode.create({ ...nodeOptions(spec), controller });
		// A node included securely before: it and the controller share the granted classes' keys.
		for (const name of spec.capabilities?.securityClasses ?? []) {
			controller.encodingContext.setSecurityClass(node.id, core.SecurityClass[name], true);
		}
		controller.addNode(node);
		node.defineBehavior(...zwTesting.createDefaultMockNodeBehaviors());
		nodes.set(node.id, node);
	}

	const faucet = new serial.Faucet(serialPort.readable);
	const server = net.createServer((socket) => {
		const writable = new WritableStream({
			write(chunk) {
				if (chunk.type !== serial.ZWaveSerialFrameType.SerialAPI) return;
				socket.write(typeof chunk.data === "number" ? Uint8Array.from([chunk.data]) : chunk.data);
			},
		});
		faucet.connect(writable);
		socket.on("close", () => {
			faucet.disconnect();
			void writable.close();
		});
		// The mock controller wants one frame (or one ACK/NAK/CAN byte) per write; TCP may join
		// or split them, so cut the stream back into frames here.
		let pending = Buffer.alloc(0);
		socket.on("data", async (data) => {
			pending = Buffer.concat([pending, data]);
			const frames = [];
			while (pending.length > 0) {
				if (pending[0] !== 0x01) {
					frames.push(pending.subarray(0, 1));
					pending = pending.subarray(1);
					continue;
				}
				if (pending.length < 2 || pending.length < pending[1] + 2) break;
				frames.push(pending.subarray(0, pending[1] + 2));
				pending = pending.subarray(pending[1] + 2);
			}
			for (const frame of frames) await serialPort.writeAsync(Uint8Array.from(frame)).catch(() => {});
		});
	});
	server.maxConnections = 1;
	server.listen({ host: "127.0.0.1", port }, () => {
		console.log(`listening ${server.address().port}`);
	});

	async function send(nodeId, endpoint, command) {
		const node = nodes.get(nodeId);
		if (!node) throw new Error(`no node ${nodeId}`);
		let frame = command;
		if (endpoint) {
			// From the node's endpoint (source) to the controller's root (destination 0).
			frame = new cc.MultiChannelCCCommandEncapsulation({
				nodeId: controller.ownNodeId,
				endpointIndex: endpoint,
				destination: 0,
				encapsulated: frame,
			});
		}
		const highest = node.encodingContext.getHighestSecurityClass?.(node.id);
		if (node.securityManagers.securityManager2 && highest !== undefined && highest !== core.SecurityClass.None) {
			// An S2 sender without a nonce from the receiver asks for one first, as a device does.
			await node.sendToController(
				testing.createMockZWaveRequestFrame(new cc.Security2CCNonceGet({ nodeId: controller.ownNodeId }), {
					ackRequested: false,
				}),
			);
			await node.expectControllerFrame(
				(f) => f.type === testing.MockZWaveFrameType.Request && f.payload instanceof cc.Security2CCNonceReport,
				{ timeout: 2000 },
			);
			frame = cc.Security2CC.encapsulate(frame, node.id, node.securityManagers);
		}
		await node.sendToController(testing.createMockZWaveRequestFrame(frame, { ackRequested: false }));
	}

	const ops = {
		sensor: (m) => new cc.MultilevelSensorCCReport({ nodeId: controller.ownNodeId, type: m.type, scale: m.scale, value: m.value }),
		meter: (m) =>
			new cc.MeterCCReport({ nodeId: controller.ownNodeId, type: m.type, scale: m.scale, value: m.value, rateType: cc.RateType.Consumed }),
		notification: (m) =>
			new cc.NotificationCCReport({ nodeId: controller.ownNodeId, notificationType: m.type, notificationEvent: m.event }),
		battery: (m) => new cc.BatteryCCReport({ nodeId: controller.ownNodeId, level: m.level }),
		binary_switch: (m) => new cc.BinarySwitchCCReport({ nodeId: controller.ownNodeId, currentValue: m.value }),
	};

	let count = 0;
	readline.createInterface({ input: process.stdin }).on("line", async (line) => {
		if (!line.trim()) return;
		const m = JSON.parse(line);
		count++;
		try {
			if (m.op === "include") {
				// The node's key pair is made now, so that its DSK (its label) is known before the
				// inclusion starts; the mock node created at inclusion time takes it over.
				const keyPair = await core.generateECDHKeyPair();
				controller.nodePendingInclusion = {
					...nodeOptions({ id: m.node, capabilities: m.capabilities }),
					setup: (node) => {
						node.ecdhKeyPair = keyPair;
						nodes.set(node.id, node);
					},
				};
				console.log(`dsk ${m.node} ${core.dskToString(keyPair.publicKey.subarray(0, 16))}`);
			} else {
				await send(m.node, m.endpoint ?? 0, ops[m.op](m));
			}
			console.log(`ok ${count}`);
		} catch (e) {
			console.log(`error ${count} ${e && e.message}`);
		}
	});
	// A host that goes away mid-exchange leaves the mock waiting for an ACK that never comes;
	// a real stick does not die of that, so neither does the mock.
	process.on("unhandledRejection", (e) => console.error(`unhandled: ${e && e.message}`));
	process.stdin.on("end", () => process.exit(0));
	process.on("SIGTERM", () => process.exit(0));
}

main().catch((e) => {
	console.error(e);
	process.exit(1);
});
