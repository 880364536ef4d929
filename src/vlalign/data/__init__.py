"""Sources and webdataset shards."""
