// Package identity holds the keys every topcdn party (publisher, origin,
// storage peer, edge) is known by.
//
// A key is an ed25519 private key in the libp2p key format: the protobuf
// encoding of go-libp2p's crypto.PrivateKey, the same bytes kubo keeps in its
// keystore. The party's identity everywhere is the peer ID derived from the
// public half of the key.
package identity
