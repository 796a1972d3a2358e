// Package dag holds the rules every topcdn party applies to content-addressed
// blocks: the block size limit, checking bytes against their CID, and
// finding the links a block holds so a DAG can be walked and checked for
// completeness.
//
// It understands dag-pb (UnixFS), raw, dag-cbor and dag-json blocks, and any
// other codec registered with go-ipld-prime's multicodec registry.
package dag
