package minioserver

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Start serves S3 with the bucket made and the credentials it gives; Stop
// ends the server and removes its data.
func TestStartServesTheBucketAndStopRemovesIt(t *testing.T) {
	bin, err := Find(nil)
	if errors.Is(err, ErrNoMinIO) && os.Getenv("CI") != "true" {
		t.Skip("skipped: " + err.Error())
	}
	ctx := context.Background()
	s, err := Start(ctx, bin, t.TempDir(), "made")
	if err != nil {
		t.Fatal(err)
	}
	client, err := minio.New(s.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(s.Getenv("AWS_ACCESS_KEY_ID"), s.Getenv("AWS_SECRET_ACCESS_KEY"), "")})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := client.BucketExists(ctx, "made"); err != nil || !ok {
		t.Fatalf("bucket made: %v %v", ok, err)
	}
	data := s.DataDir()
	s.Stop()
	if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after Stop, its data: %v", err)
	}
}
