// Command objstore measures issue 13's targets 1 to 3 for repositories on
// object storage: diskpoint's first backup, its incremental after a 1%
// change, and its restore, into a repository in a MinIO on 127.0.0.1 (its
// data on the same disk as the local repository's) against the same steps
// into a local directory, with the diskpoint CLI, on the mixed image of
// bench/compare (30% holes, 30% text, 25% random, 15% repeated runs;
// seed 1; the change rewrites 1% in scattered 4-64 KiB writes, seed 2).
//
//	go run ./bench/objstore -size 2GiB -runs 3
//
// MinIO is the program DISKPOINT_MINIO names, or minio on PATH. diskpoint
// reaches it through a proxy in this program that counts the requests and
// the bytes of their answers, for target 2's "downloads less than 2% of
// the repository's bytes". With -restic (the default when restic is
// installed), restic takes the same steps into the same MinIO through the
// same proxy, for target 4. The CLI keeps its local cache of the remote
// repository (index files, tree packs) in the working directory, new for
// each run, as a host that backs up to the bucket would (restic's too).
// Every step of every tool starts as in bench/compare: dirty pages written
// back, the image, the repository (or MinIO's data) and the tool's cache
// read into the page cache, and twice the image's size of memory touched
// and freed (see benchutil.TouchAndFree: without it a restore ran up to
// twice as long on this VM, depending on the step before). Every step
// runs -runs times with new repositories; the table shows medians, and
// each restore is checked bit-exact.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/diskpoint/diskpoint/internal/benchutil"
	"github.com/diskpoint/diskpoint/internal/demodisk"
	"github.com/diskpoint/diskpoint/internal/objserver"
	"github.com/dustin/go-humanize"
	"github.com/minio/minio-go/v7"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "objstore:", err)
		os.Exit(1)
	}
}

// counts are what went through the proxy.
type counts struct {
	requests, gets atomic.Int64
	downloaded     atomic.Int64 // bytes of answers' bodies
	uploaded       atomic.Int64 // bytes of requests' bodies
}

func (c *counts) reset() {
	c.requests.Store(0)
	c.gets.Store(0)
	c.downloaded.Store(0)
	c.uploaded.Store(0)
}

// countingBody counts the bytes read through it.
type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// startProxy serves a reverse proxy to target on 127.0.0.1 that keeps the
// client's Host header (S3 signs it) and counts what passes.
func startProxy(target string, c *counts) (string, func(), error) {
	u, err := url.Parse("http://" + target)
	if err != nil {
		return "", nil, err
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = r.In.Host
			c.requests.Add(1)
			if r.In.Method == http.MethodGet {
				c.gets.Add(1)
			}
			if r.Out.Body != nil {
				r.Out.Body = countingBody{r.Out.Body, &c.uploaded}
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			resp.Body = countingBody{resp.Body, &c.downloaded}
			return nil
		},
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: proxy}
	go srv.Serve(l)
	return l.Addr().String(), func() { srv.Close() }, nil
}

// timed starts a step as bench/compare does (dirty pages written back;
// the image, data (the repository's files, or MinIO's) and cache (the
// tool's local cache of the remote repository, if any) read into the page
// cache; twice the image's size of memory touched and freed), runs name
// with env added, and appends its wall time to steps[key] (one per run).
// Every tool's steps, diskpoint's local and MinIO ones and restic's, start
// alike.
func timed(steps map[string][]time.Duration, key, image, data, cache string, env []string, name string, args ...string) error {
	benchutil.Warm(image, data)
	benchutil.Warm("", cache)
	fi, err := os.Stat(image)
	if err != nil {
		return err
	}
	if err := benchutil.TouchAndFree(2 * fi.Size()); err != nil {
		return err
	}
	start := time.Now()
	if err := sh(env, name, args...); err != nil {
		return err
	}
	steps[key] = append(steps[key], time.Since(start))
	return nil
}

func run() error {
	sizeFlag := flag.String("size", "2GiB", "image size")
	runs := flag.Int("runs", 1, "run every step this many times; the table shows medians")
	work := flag.String("work", "", "working directory (default: a new one under /var/tmp, removed after)")
	withRestic := flag.Bool("restic", true, "also take the steps with restic into the same MinIO, for target 4 (when restic is installed)")
	flag.Parse()
	if _, err := exec.LookPath("restic"); err != nil {
		*withRestic = false
	}
	size, err := humanize.ParseBytes(*sizeFlag)
	if err != nil {
		return err
	}
	ctx := context.Background()
	dir := *work
	if dir == "" {
		if dir, err = os.MkdirTemp("/var/tmp", "diskpoint-objstore-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	bin, err := objserver.FindMinIO(nil)
	if err != nil {
		return err
	}
	server, err := objserver.LaunchMinIO(ctx, bin, dir)
	if err != nil {
		return err
	}
	defer server.Stop()
	if err := server.CreateBucket(ctx, "bench"); err != nil {
		return err
	}
	var c counts
	proxy, stopProxy, err := startProxy(server.Endpoint, &c)
	if err != nil {
		return err
	}
	defer stopProxy()
	client, err := server.NewClient()
	if err != nil {
		return err
	}

	image := filepath.Join(dir, "disk.img")
	fmt.Fprintf(os.Stderr, "generating a %s mixed image in %s\n", humanize.IBytes(size), dir)
	if err := demodisk.Create(image, int64(size), 1, demodisk.MixedImage); err != nil {
		return err
	}
	cli := filepath.Join(dir, "diskpoint")
	if err := sh(nil, "go", "build", "-o", cli, "./examples/diskpoint"); err != nil {
		return err
	}
	before, after := filepath.Join(dir, "before.img"), filepath.Join(dir, "after.img")
	if err := sh(nil, "cp", "--sparse=always", image, before); err != nil {
		return err
	}
	if _, err := demodisk.Scatter(image, 0.01, 2); err != nil {
		return err
	}
	if err := sh(nil, "cp", "--sparse=always", image, after); err != nil {
		return err
	}
	use := func(version string) error { return sh(nil, "cp", "--sparse=always", version, image) }

	steps := map[string][]time.Duration{}
	var incrGets, incrDown, repoBytes []int64
	for r := 1; r <= *runs; r++ {
		fmt.Fprintf(os.Stderr, "--- run %d of %d\n", r, *runs)
		for _, where := range []string{"local", "minio"} {
			repo, data, cache, env := filepath.Join(dir, "repo"), filepath.Join(dir, "repo"), "", []string(nil)
			prefix := fmt.Sprintf("run%d", r)
			if where == "minio" {
				// The CLI's local cache of the remote repository's index
				// files and tree packs lives in the working directory,
				// new for each run.
				cache = filepath.Join(dir, fmt.Sprintf("cache%d", r))
				repo, data, env = fmt.Sprintf("s3:http://%s/bench/%s", proxy, prefix), server.DataDir(), append(server.Env(), "XDG_CACHE_HOME="+cache)
			}
			if err := sh(env, cli, "init", "-repo", repo); err != nil {
				return err
			}
			if err := use(before); err != nil {
				return err
			}
			if err := timed(steps, where+" first backup", image, data, cache, env, cli, "create", "-q", "-repo", repo, "-collection", "vm", "d="+image); err != nil {
				return err
			}
			if err := use(after); err != nil {
				return err
			}
			if where == "minio" {
				n, err := bucketBytes(ctx, client, "bench", prefix)
				if err != nil {
					return err
				}
				repoBytes = append(repoBytes, n)
				c.reset()
			}
			if err := timed(steps, where+" after 1% change", image, data, cache, env, cli, "create", "-q", "-repo", repo, "-collection", "vm", "d="+image); err != nil {
				return err
			}
			if where == "minio" {
				incrGets = append(incrGets, c.gets.Load())
				incrDown = append(incrDown, c.downloaded.Load())
			}
			restored := filepath.Join(dir, "restored.img")
			if err := timed(steps, where+" restore", image, data, cache, env, cli, "restore", "-q", "-repo", repo, "-collection", "vm", "-point", "latest", "-disk", "d", "-to", restored); err != nil {
				return err
			}
			if err := sh(nil, "cmp", "-s", restored, after); err != nil {
				return fmt.Errorf("the %s restore differs from the image: %w", where, err)
			}
			os.Remove(restored)
			if where == "local" {
				os.RemoveAll(repo)
			}
		}
		if *withRestic {
			if err := resticSteps(dir, r, proxy, server, image, before, after, use, steps); err != nil {
				return err
			}
		}
	}

	fmt.Printf("| step | local | MinIO | MinIO / local | target | met |\n| --- | --- | --- | --- | --- | --- |\n")
	for i, s := range []struct {
		name  string
		limit float64
	}{{"first backup", 1.5}, {"after 1% change", 2}, {"restore", 2}} {
		local, remote := benchutil.Median(steps["local "+s.name]), benchutil.Median(steps["minio "+s.name])
		ratio := remote.Seconds() / local.Seconds()
		fmt.Printf("| %d. %s | %s | %s | %.2fx | within %.1fx | %s |\n", i+1, s.name, benchutil.Secs(local), benchutil.Secs(remote), ratio, s.limit, benchutil.Yes(ratio <= s.limit))
	}
	if *withRestic {
		// Target 4: restic into the same MinIO, same image, same change.
		for _, s := range []struct {
			name   string
			factor float64
		}{{"after 1% change", 8}, {"restore", 2}} {
			ours, theirs := benchutil.Median(steps["minio "+s.name]), benchutil.Median(steps["restic "+s.name])
			faster := theirs.Seconds() / ours.Seconds()
			fmt.Printf("| 4. %s, restic -r s3: into the same MinIO | restic %s | %s | %.1fx faster | at least %.0fx faster | %s |\n", s.name, benchutil.Secs(theirs), benchutil.Secs(ours), faster, s.factor, benchutil.Yes(faster >= s.factor))
		}
	}
	mid := len(incrDown) / 2
	share := float64(incrDown[mid]) / float64(repoBytes[mid])
	fmt.Printf("\nThe incremental after the 1%% change downloaded %s in %d GET requests from a repository of %s: %.4f%% of its bytes (target: under 2%%: %s).\n",
		humanize.IBytes(uint64(incrDown[mid])), incrGets[mid], humanize.IBytes(uint64(repoBytes[mid])), 100*share, benchutil.Yes(share < 0.02))
	fmt.Printf("\nEvery run, in seconds:\n\n")
	for _, where := range []string{"local", "minio"} {
		for _, name := range []string{"first backup", "after 1% change", "restore"} {
			var each []string
			for _, d := range steps[where+" "+name] {
				each = append(each, fmt.Sprintf("%.2f", d.Seconds()))
			}
			fmt.Printf("- %s %s: %s\n", where, name, strings.Join(each, ", "))
		}
	}
	if *withRestic {
		for _, name := range []string{"first backup", "after 1% change", "restore"} {
			var each []string
			for _, d := range steps["restic "+name] {
				each = append(each, fmt.Sprintf("%.2f", d.Seconds()))
			}
			fmt.Printf("- restic (MinIO) %s: %s\n", name, strings.Join(each, ", "))
		}
	}
	fmt.Printf("- MinIO incremental: GET requests %v, bytes downloaded %v, repository bytes %v\n", incrGets, incrDown, repoBytes)
	return nil
}

// bucketBytes sums the sizes of the objects under prefix.
func bucketBytes(ctx context.Context, client *minio.Client, bucket, prefix string) (int64, error) {
	var n int64
	for obj := range client.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix + "/", Recursive: true}) {
		if obj.Err != nil {
			return 0, obj.Err
		}
		n += obj.Size
	}
	return n, nil
}

// sh runs a command with more environment, its output to stderr.
func sh(env []string, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return nil
}

// resticSteps takes the same three steps with restic into a repository in
// the same MinIO, through the same proxy, timed as diskpoint's are.
func resticSteps(dir string, r int, proxy string, server *objserver.MinIO, image, before, after string, use func(string) error, steps map[string][]time.Duration) error {
	repo := fmt.Sprintf("s3:http://%s/bench/restic%d", proxy, r)
	// restic's cache, as diskpoint's, is new for each run, in the working
	// directory ($XDG_CACHE_HOME/restic), not the one in $HOME that every
	// run and every earlier bench would share.
	cache := filepath.Join(dir, fmt.Sprintf("restic-cache%d", r))
	env := append(server.Env(), "RESTIC_PASSWORD=objstore", "XDG_CACHE_HOME="+cache)
	restic := func(key string, args ...string) error {
		return timed(steps, key, image, server.DataDir(), cache, env, "restic", args...)
	}
	if err := sh(env, "restic", "-q", "--repo", repo, "init"); err != nil {
		return err
	}
	if err := use(before); err != nil {
		return err
	}
	if err := restic("restic first backup", "-q", "--repo", repo, "backup", image); err != nil {
		return err
	}
	if err := use(after); err != nil {
		return err
	}
	if err := restic("restic after 1% change", "-q", "--repo", repo, "backup", image); err != nil {
		return err
	}
	target := filepath.Join(dir, "restic-restore")
	if err := restic("restic restore", "-q", "--repo", repo, "restore", "latest", "--target", target); err != nil {
		return err
	}
	if err := sh(nil, "cmp", "-s", filepath.Join(target, image), after); err != nil {
		return fmt.Errorf("restic's restore differs from the image: %w", err)
	}
	return os.RemoveAll(target)
}
