"""What travels between quotaflow's functions: the event catalog (type, topic, schema), one
typed payload per event type, the envelope with its CloudEvents HTTP and Kafka bindings, and
the Avro codec. Nothing here imports the runtime (`quotaflow`)."""
