// Package objserver starts the object-store servers that tests outside
// chain run repositories on: a real MinIO and a real Azurite, each on
// 127.0.0.1 at a free port with its data in the test's temporary
// directory, stopped when the test ends. The CLI's tests reach them
// through the built binary with s3: and azure: locations; the examples
// use them as a vault. (chain/s3store and chain/azurestore start their own,
// once per package, with what their fault tests need.)
//
// The programs are found as those packages find them: $DISKPOINT_MINIO or
// $DISKPOINT_AZURITE, the PATH, or where .ci/run installs them. Without
// one the test skips with a one-line reason, except under CI=true, where
// it fails.
package objserver
