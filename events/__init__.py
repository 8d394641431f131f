"""What travels between quotaflow's functions: the event catalog (type, topic, schema), one
typed payload per event type, the envelope with its CloudEvents HTTP and Kafka bindings, and
the Avro codec. Imported as `quotaflow.events` (the symlink quotaflow/events in a checkout, a
subpackage in the wheel), yet nothing here imports the rest of `quotaflow`."""
