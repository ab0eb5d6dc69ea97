"""The stream topology: faust agents wiring the pure core and the executor to Kafka."""
