package nbd

// Constants of the NBD protocol (doc/proto.md in the NBD project).
const (
	magicNBD         = 0x4e42444d41474943 // "NBDMAGIC"
	magicIHaveOpt    = 0x49484156454f5054 // "IHAVEOPT"
	magicOptionReply = 0x0003e889045565a9
	magicRequest     = 0x25609513
	magicSimpleReply = 0x67446698

	flagFixedNewstyle = 1 << 0 // handshake flags, server
	flagNoZeroes      = 1 << 1
	clientFixed       = 1 << 0 // handshake flags, client
	clientNoZeroes    = 1 << 1

	optExportName = 1
	optAbort      = 2
	optList       = 3
	optInfo       = 6
	optGo         = 7

	repAck      = 1
	repServer   = 2
	repInfo     = 3
	repErrUnsup = 1<<31 + 1
	repErrInval = 1<<31 + 3
	repErrUnkn  = 1<<31 + 6

	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3

	transHasFlags     = 1 << 0
	transReadOnly     = 1 << 1
	transCanMultiConn = 1 << 8

	cmdRead  = 0
	cmdWrite = 1
	cmdDisc  = 2

	errPerm  = 1
	errIO    = 5
	errInval = 22

	requestHeaderSize = 28
	maxOptionLength   = 64 << 10 // no option we understand needs more
)
