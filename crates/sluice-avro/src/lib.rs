//! Avro codecs for Sluice (work in progress: see the module docs as they land).
