package objhttp

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"3", 3 * time.Second, true},
		{"0", 0, true},
		{"-1", 0, false},
		{"soon", 0, false},
		{now.Add(7 * time.Second).Format(http.TimeFormat), 7 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
	} {
		got, ok := ParseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// A 503 with Retry-After is handed on only after the wait it asks for;
// without HoldRetryAfter, at once.
func TestTransportHoldsRetryAfter(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	for _, hold := range []bool{true, false} {
		tr := &Transport{Base: http.DefaultTransport, Timeout: 10 * time.Second, HoldRetryAfter: hold, MaxRetryAfter: 5 * time.Second}
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		start := time.Now()
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		waited := time.Since(start)
		if hold && waited < time.Second {
			t.Errorf("held the 503 for %v, want the 1 s it asked for", waited)
		}
		if !hold && waited >= time.Second {
			t.Errorf("without HoldRetryAfter, the 503 took %v", waited)
		}
	}
}

// A server that stalls, before its headers or in its body, fails the
// request when its time is up, and the error says so.
func TestTransportTimesOutStalls(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/body" {
			w.Header().Set("Content-Length", "10")
			w.WriteHeader(http.StatusOK)
			w.Write([]byte("12345"))
			w.(http.Flusher).Flush()
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	tr := &Transport{Base: http.DefaultTransport, Timeout: 200 * time.Millisecond}

	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/headers", nil)
	if _, err := tr.RoundTrip(req); !errors.Is(err, ErrRequestTimeout) {
		t.Errorf("stalled before the headers: %v, want ErrRequestTimeout", err)
	}

	req, _ = http.NewRequest(http.MethodGet, srv.URL+"/body", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	done := make(chan error, 1)
	go func() { _, err := io.ReadAll(resp.Body); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a body that stalled read to its end")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a stalled body was not cut off")
	}
}

// The counter in a ctx counts the requests sent under it.
func TestAttemptCounter(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	tr := &Transport{Base: http.DefaultTransport, Timeout: 10 * time.Second}
	ctx, counter := WithAttemptCounter(context.Background())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range 3 {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if n := counter.Attempts(); n != 3 {
		t.Fatalf("counted %d attempts, want 3", n)
	}
}
