package azurestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"

	"github.com/diskpoint/diskpoint/chain"
)

// wrap turns an azblob error into one that names the object and wraps the
// chain sentinel that says what it means (see the chain.Store contract).
func (s *Store) wrap(ctx context.Context, op, name string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%s %s: %w (%v)", op, name, cerr, err)
	}
	var resp *azcore.ResponseError
	if !errors.As(err, &resp) {
		// No answer from the service: a connection refused or reset, a
		// request that timed out, a body cut short. Trying again can help.
		return fmt.Errorf("%s %s in %s: %w: %w", op, name, s, chain.ErrTransient, err)
	}
	code := bloberror.Code(resp.ErrorCode)
	switch {
	case code == bloberror.BlobNotFound ||
		(resp.StatusCode == http.StatusNotFound && code != bloberror.ContainerNotFound):
		return fmt.Errorf("%s %s: %w", op, name, chain.ErrNotFound)
	case code == bloberror.BlobAlreadyExists || code == bloberror.ConditionNotMet ||
		resp.StatusCode == http.StatusPreconditionFailed:
		return fmt.Errorf("%s %s: %w", op, name, chain.ErrExists)
	case code == bloberror.InvalidRange || resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("%s %s: range past the end: %w", op, name, io.ErrUnexpectedEOF)
	case transientStatus(resp.StatusCode) || code == bloberror.ServerBusy ||
		code == bloberror.OperationTimedOut || code == bloberror.InternalError:
		return fmt.Errorf("%s %s in %s: %w: %w", op, name, s, chain.ErrTransient, err)
	}
	return fmt.Errorf("%s %s in %s: %w", op, name, s, err)
}

// transientStatus: the HTTP statuses the pipeline retries, and that may
// still pass when it gave up.
func transientStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests,
		http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}
