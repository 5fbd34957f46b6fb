package chain

// ReadAheadSpans is the bound on the span reads of one ReadBlobs call.
const ReadAheadSpans = readAheadSpans
