// Package minioserver starts a real MinIO server for a program that is not
// a test: examples/tiered (when no vault is named) and bench/objstore.
// Tests use internal/objserver, which ties the server's life and data to a
// testing.T; this package has no testing.T, so its caller stops the
// server.
package minioserver
