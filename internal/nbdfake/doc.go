// Package nbdfake is a scripted NBD server for tests: an honest handshake,
// then whatever the test makes of each request, lies included (replies to
// handles never sent, data past the request, block status past the end,
// short reads). It lets the tests of nbd's client and of the NBD disk
// source show that every lie fails with an error naming the server.
package nbdfake
