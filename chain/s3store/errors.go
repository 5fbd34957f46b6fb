package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/minio/minio-go/v7"

	"github.com/diskpoint/diskpoint/chain"
)

// wrap turns a minio-go error into one that names the object and wraps the
// chain sentinel that says what it means (see the chain.Store contract).
func (s *Store) wrap(ctx context.Context, op, name string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%s %s: %w (%v)", op, name, cerr, err)
	}
	var resp minio.ErrorResponse
	if !errors.As(err, &resp) {
		// No answer from the server: a connection refused or reset, a
		// request that timed out, a body cut short. Trying again can help.
		return fmt.Errorf("%s %s in %s: %w: %w", op, name, s, chain.ErrTransient, err)
	}
	switch {
	case resp.Code == minio.NoSuchKey || resp.Code == "NotFound" ||
		(resp.StatusCode == http.StatusNotFound && resp.Code != minio.NoSuchBucket):
		return fmt.Errorf("%s %s: %w", op, name, chain.ErrNotFound)
	case resp.Code == "PreconditionFailed" || resp.StatusCode == http.StatusPreconditionFailed:
		return fmt.Errorf("%s %s: %w", op, name, chain.ErrExists)
	case resp.Code == "InvalidRange" || resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("%s %s: range past the end: %w", op, name, io.ErrUnexpectedEOF)
	case resp.Code == "XMinioParentIsObject" || resp.Code == "XMinioObjectExistsAsDirectory":
		return fmt.Errorf("%s %s: the name collides with another object's path (%s): %w", op, name, resp.Message, chain.ErrInvalidName)
	case resp.Code == "NotImplemented" || resp.StatusCode == http.StatusNotImplemented:
		return fmt.Errorf("%s %s in %s: the server does not support this request (for PutIfAbsent: conditional PUT; see s3store.CreateOnlyCheckThenPut): %w", op, name, s, err)
	case transientStatus(resp.StatusCode) || transientCode(resp.Code):
		return fmt.Errorf("%s %s in %s: %w: %w", op, name, s, chain.ErrTransient, err)
	}
	return fmt.Errorf("%s %s in %s: %w", op, name, s, err)
}

// transientStatus: the HTTP statuses minio-go retries, and that may still
// pass when it gave up.
func transientStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, 499,
		http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout, 520:
		return true
	}
	return false
}

// transientCode: S3 error codes that mean "not now".
func transientCode(code string) bool {
	switch code {
	case "RequestError", "RequestTimeout", "Throttling", "ThrottlingException",
		"RequestLimitExceeded", "RequestThrottled", "InternalError",
		"SlowDown", "SlowDownWrite", "SlowDownRead", "ServiceUnavailable":
		return true
	}
	return false
}

// isTransient says whether a wrapped error is worth trying again.
func isTransient(err error) bool { return errors.Is(err, chain.ErrTransient) }
