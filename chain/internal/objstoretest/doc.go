// Package objstoretest holds the tests that every object-store backend of
// chain (s3store against MinIO, azurestore against Azurite) runs the same
// way: fault injection through a proxy, PutIfAbsent races across clients,
// long listings, and repositories living on the server. Each backend's
// tests pass a factory and what differs; the checks live here once, as
// chain/storetest holds the Store conformance suite.
package objstoretest
