"""MQTT publishing: the paho adapter (:mod:`.client`), the buffer-draining :class:`.publisher.Publisher`,
packing records into messages (:mod:`.packing`) and the backend's decoder (:mod:`.decode`)."""
