// Package location reads where a repository lives, as the operator writes
// it on a command line or in DISKPOINT_REPOSITORY, and opens a [chain.Store]
// there. The forms follow restic's:
//
//	/srv/backups/repo, ./repo        a local directory (a plain path)
//	local:PATH                       a local directory, for a path that
//	                                 would otherwise read as a scheme
//	                                 ("local:C:\repo", "local:a:b")
//	s3:http://HOST:PORT/BUCKET/PREFIX  an S3 bucket over plain HTTP (MinIO)
//	s3:https://HOST/BUCKET/PREFIX    an S3 bucket over TLS
//	s3:HOST/BUCKET/PREFIX            the same: TLS is the default
//	azure:CONTAINER:/PREFIX          an Azure Blob container
//
// A value whose text before its first ':' has no '/' names a scheme; one
// this package does not know is refused, rather than taken for a local
// directory named "s3x:http:". PREFIX may be left out (the repository is
// then the whole bucket or container).
//
// Credentials never come from the location (a URL with user:password@ is
// refused: command lines show in ps and shell histories); [Location.NewStore]
// reads them from the environment, where each ecosystem keeps them:
//
//   - S3: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN
//     for temporary credentials), else the shared credentials file
//     (~/.aws/credentials, or AWS_SHARED_CREDENTIALS_FILE, profile
//     AWS_PROFILE or "default"). AWS_REGION or AWS_DEFAULT_REGION, when
//     set, saves asking the server for the bucket's region.
//   - Azure: AZURE_STORAGE_CONNECTION_STRING (whose BlobEndpoint= may name
//     an emulator such as Azurite, over plain HTTP), or AZURE_STORAGE_ACCOUNT
//     with AZURE_STORAGE_KEY (the account's endpoint in the public cloud).
//
// Library users who hold their own clients need none of this: every
// repository function takes a chain.Store.
package location
