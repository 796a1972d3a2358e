// Package publish turns a directory (or a CAR file) into a content-addressed
// DAG and pushes it to a topcdn origin.
//
// ImportDir builds a UnixFS DAG with boxo's importer. Its defaults give the
// root CID that kubo's `ipfs add -r --cid-version=1` gives for the same
// directory: CIDv1, raw leaves, sha2-256, 256 KiB chunks, balanced layout,
// HAMT sharding for directories past 256 KiB of links, hidden files skipped,
// empty directories kept. File leaves are not held in memory: a DAG keeps
// where each leaf lies in its file and reads (and re-verifies) it when the
// DAG is uploaded.
//
// Client talks to an origin: it asks which blocks the origin lacks, streams
// only those as a CAR, then signs and sends the IPNS record that moves a
// human name to the new root.
package publish
