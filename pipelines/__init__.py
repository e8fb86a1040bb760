"""Ray Data pipelines that turn KTH videos, radar archives and MNIST into Parquet window shards."""
