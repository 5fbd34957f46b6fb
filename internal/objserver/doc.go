// Package objserver starts the object-store servers that diskpoint's
// tests, examples and benchmarks run repositories on: a real MinIO and a
// real Azurite, each on 127.0.0.1 at a free port with its data in a new
// directory.
//
// A test calls StartMinIO or StartAzurite for a server of its own, stopped
// when the test ends, or SharedMinIO or SharedAzurite for one the whole
// test binary shares (its TestMain calls StopShared); a missing program
// skips the test with a one-line reason, except under CI=true, where it
// fails. A program (examples/tiered, bench/objstore) finds the program
// with FindMinIO and starts it with LaunchMinIO, and calls Stop. A MinIO
// can be killed and restarted on its data, as a crashed server is.
//
// The programs are found as .ci/run installs them: $DISKPOINT_MINIO or
// $DISKPOINT_AZURITE, the PATH, or where `go install` and .ci/run's npm
// install put them.
package objserver
