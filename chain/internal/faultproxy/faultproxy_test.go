package faultproxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestFaults(t *testing.T) {
	var served int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served++
		body, _ := io.ReadAll(r.Body)
		w.Write([]byte("echo:" + string(body)))
	}))
	defer srv.Close()
	p, err := New(strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{}}
	url := "http://" + p.Addr() + "/x"
	post := func() (*http.Response, string, error) {
		resp, err := client.Post(url, "text/plain", strings.NewReader("hello"))
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, string(b), err
	}

	if resp, body, err := post(); err != nil || resp.StatusCode != 200 || body != "echo:hello" {
		t.Fatalf("pass: %v %q %v", resp, body, err)
	}
	p.Next(1, Fault{Kind: Status, Status: 503, RetryAfter: "2"})
	p.Next(1, Fault{Kind: Drop})
	resp, _, err := post()
	if err != nil || resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "2" {
		t.Fatalf("status fault: %v, %v", resp, err)
	}
	if _, _, err := post(); err == nil {
		t.Fatal("a dropped connection answered")
	}
	p.Next(1, Fault{Kind: Stall})
	if _, _, err := post(); err == nil {
		t.Fatal("a stalled request answered")
	}
	before := served
	p.Next(1, Fault{Kind: DropAfterForward})
	if _, _, err := post(); err == nil {
		t.Fatal("a lost answer arrived")
	}
	if served != before+1 {
		t.Fatalf("DropAfterForward: the server saw %d requests, want 1", served-before)
	}
	if resp, body, err := post(); err != nil || body != "echo:hello" {
		t.Fatalf("after the faults: %v %q %v", resp, body, err)
	}
	if p.Faulted() != 4 || p.Requests() < 6 || p.BytesUp() < 10 || p.BytesDown() < 20 {
		t.Fatalf("counts: %d faulted, %d requests, %d up, %d down", p.Faulted(), p.Requests(), p.BytesUp(), p.BytesDown())
	}
}

// A request that expects 100-continue (azblob sends one after a throttled
// answer) passes, and meets a fault, like any other.
func TestExpectContinue(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Write([]byte("echo:" + string(body)))
	}))
	defer srv.Close()
	p, err := New(strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{ExpectContinueTimeout: 10 * time.Second}}
	send := func() (int, string, error) {
		req, _ := http.NewRequest(http.MethodPut, "http://"+p.Addr()+"/x", strings.NewReader("hello"))
		req.Header.Set("Expect", "100-continue")
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	if code, body, err := send(); err != nil || code != 200 || body != "echo:hello" {
		t.Fatalf("pass: %d %q %v", code, body, err)
	}
	p.Next(1, Fault{Kind: Status, Status: 500})
	if code, _, err := send(); err != nil || code != 500 {
		t.Fatalf("status fault: %d %v", code, err)
	}
	if code, body, err := send(); err != nil || body != "echo:hello" {
		t.Fatalf("after the fault: %d %q %v", code, body, err)
	}
}
