-- Schema 3: retiring a device (a worker leaves). A retired device may still push what it holds;
-- it receives nothing new. drained_ms: when it last reported nothing left to send.
ALTER TABLE devices ADD COLUMN retired_ms INTEGER;
ALTER TABLE devices ADD COLUMN drained_ms INTEGER;
