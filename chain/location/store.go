package location

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/azurestore"
	"github.com/diskpoint/diskpoint/chain/s3store"
)

// ErrNoCredentials is in the error of a remote location whose credentials
// the environment does not give.
var ErrNoCredentials = errors.New("no credentials")

// Getenv reads one environment variable; os.Getenv is one.
type Getenv func(name string) string

// NewStore parses s and returns a store at that location, with the
// credentials of the process's environment (see [Location.NewStore]).
func NewStore(s string) (chain.Store, error) {
	loc, err := Parse(s)
	if err != nil {
		return nil, err
	}
	return loc.NewStore(nil)
}

// NewStore returns a store at the location. A local directory is created
// if it is missing (as chain.NewLocalStore does). An S3 or Azure store is
// wrapped in a chain.RetryStore, for the failures its SDK's own retries
// did not outlast; it sends no request yet, so a wrong server or bucket
// shows in the first operation. Credentials are read with getenv (nil:
// os.Getenv) from the variables the package doc names; none is an error
// wrapping ErrNoCredentials that says which to set.
func (l Location) NewStore(getenv Getenv) (chain.Store, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	var store chain.Store
	var err error
	switch l.Scheme {
	case Local:
		return chain.NewLocalStore(l.Path)
	case S3:
		store, err = l.newS3Store(getenv)
	case Azure:
		store, err = l.newAzureStore(getenv)
	default:
		return nil, fmt.Errorf("repository %s: %w %q", l, ErrUnknownScheme, l.Scheme)
	}
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", l, err)
	}
	return chain.NewRetryStore(store, chain.RetryOptions{}), nil
}

func (l Location) newS3Store(getenv Getenv) (chain.Store, error) {
	creds, err := s3Credentials(getenv)
	if err != nil {
		return nil, err
	}
	region := getenv("AWS_REGION")
	if region == "" {
		region = getenv("AWS_DEFAULT_REGION")
	}
	return s3store.New(s3store.Options{
		Endpoint:    l.Endpoint,
		Bucket:      l.Bucket,
		Prefix:      l.Prefix,
		Credentials: creds,
		Region:      region,
		Insecure:    l.Insecure,
	})
}

// s3Credentials are the environment's static credentials, or else the
// shared credentials file's.
func s3Credentials(getenv Getenv) (*credentials.Credentials, error) {
	id, secret := getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY")
	switch {
	case id != "" && secret != "":
		return credentials.NewStaticV4(id, secret, getenv("AWS_SESSION_TOKEN")), nil
	case id != "" || secret != "":
		return nil, fmt.Errorf("%w: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together, and only one is set", ErrNoCredentials)
	}
	file := getenv("AWS_SHARED_CREDENTIALS_FILE")
	if file == "" {
		if home := getenv("HOME"); home != "" {
			file = filepath.Join(home, ".aws", "credentials")
		}
	}
	if file != "" {
		if _, err := os.Stat(file); err == nil {
			profile := getenv("AWS_PROFILE")
			if profile == "" {
				profile = "default"
			}
			creds := credentials.NewFileAWSCredentials(file, profile)
			if _, err := creds.GetWithContext(nil); err != nil {
				return nil, fmt.Errorf("%w: profile %s of %s: %w", ErrNoCredentials, profile, file, err)
			}
			return creds, nil
		}
	}
	return nil, fmt.Errorf("%w for S3: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones), or write them to ~/.aws/credentials", ErrNoCredentials)
}

func (l Location) newAzureStore(getenv Getenv) (chain.Store, error) {
	opts := azurestore.Options{Container: l.Container, Prefix: l.Prefix}
	account, key := getenv("AZURE_STORAGE_ACCOUNT"), getenv("AZURE_STORAGE_KEY")
	switch cs := getenv("AZURE_STORAGE_CONNECTION_STRING"); {
	case cs != "":
		// The connection string names its endpoint: plain HTTP there is
		// the operator's choice (an emulator), not a downgrade.
		opts.ConnectionString, opts.Insecure = cs, true
	case account != "" && key != "":
		opts.AccountName, opts.AccountKey = account, key
	case account != "":
		return nil, fmt.Errorf("%w for Azure: AZURE_STORAGE_ACCOUNT is set, AZURE_STORAGE_KEY is not", ErrNoCredentials)
	default:
		return nil, fmt.Errorf("%w for Azure: set AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY, or AZURE_STORAGE_CONNECTION_STRING", ErrNoCredentials)
	}
	return azurestore.New(opts)
}
