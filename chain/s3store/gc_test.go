package s3store_test

import (
	"context"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/chain/internal/objstoretest"
	"github.com/diskpoint/diskpoint/chain/s3store"
	"github.com/diskpoint/diskpoint/internal/objserver"
	"github.com/diskpoint/diskpoint/snapshot"
)

// GC aborts the multipart uploads under the repository that an
// interrupted Put left behind once they are older than its window, and
// leaves a younger one alone (it may be a live writer's). By default the
// window is the stale-lock age, which leaves both alone here. The store
// is reached through a RetryStore, as the CLI opens it.
func TestGCAbortsStaleUploads(t *testing.T) {
	srv := objserver.SharedMinIO(t)
	bucket := newBucket(t, srv)
	s, err := s3store.New(storeOptions(srv, bucket, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r := objstoretest.NewRepo(ctx, t, chain.NewRetryStore(s, chain.RetryOptions{}), 1<<20, 3)
	defer r.Repo.Close()
	client, err := srv.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	core := minio.Core{Client: client}
	old, err := core.NewMultipartUpload(ctx, bucket, "repo/packs/aa/interrupted", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The server dates uploads to the millisecond: let time pass between
	// the two, so that a window can fall between them.
	time.Sleep(1500 * time.Millisecond)
	between := time.Now().Add(-750 * time.Millisecond)
	fresh, err := core.NewMultipartUpload(ctx, bucket, "repo/packs/bb/in-flight", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	outside, err := core.NewMultipartUpload(ctx, bucket, "other/packs/aa/interrupted", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	uploads := func() map[string]bool {
		t.Helper()
		page, err := core.ListMultipartUploads(ctx, bucket, "", "", "", "", 1000)
		if err != nil {
			t.Fatal(err)
		}
		ids := map[string]bool{}
		for _, u := range page.Uploads {
			ids[u.UploadID] = true
		}
		return ids
	}

	report, err := r.Repo.GC(ctx, snapshot.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if left := uploads(); report.UploadsAborted != 0 || len(left) != 3 {
		t.Fatalf("GC with the stale-lock window aborted %d uploads, %d left; want none aborted", report.UploadsAborted, len(left))
	}
	if report, err = r.Repo.GC(ctx, snapshot.GCOptions{DryRun: true, IncompleteUploadAge: time.Nanosecond}); err != nil || report.UploadsAborted != 0 || len(uploads()) != 3 {
		t.Fatalf("a dry run aborted %d uploads (%v)", report.UploadsAborted, err)
	}

	report, err = r.Repo.GC(ctx, snapshot.GCOptions{IncompleteUploadAge: time.Since(between)})
	if err != nil {
		t.Fatal(err)
	}
	left := uploads()
	if report.UploadsAborted != 1 || left[old] || !left[fresh] || !left[outside] {
		t.Fatalf("GC aborted %d uploads; left %v; want only the old one (%s) aborted", report.UploadsAborted, left, old)
	}
}
