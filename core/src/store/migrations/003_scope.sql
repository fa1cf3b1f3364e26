-- A case the server said left this device's scope (the worker moved, a dispatch ended). It is
-- hidden from lists but never deleted: the document and any unsynced work stay on the device.
ALTER TABLE cases ADD COLUMN out_of_scope_ms INTEGER;
