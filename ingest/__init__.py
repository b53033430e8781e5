"""The MQTT ingester: validate, batch, store in one transaction, then acknowledge."""
