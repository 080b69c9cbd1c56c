"""The encrypted SQLite store-and-forward buffer: retention by crypto-shredding, byte cap, crash safety."""
