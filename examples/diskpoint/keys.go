package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/diskpoint/diskpoint/chain"
	"github.com/diskpoint/diskpoint/snapshot"
)

func runKeygen(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
	if err := parse(fs, args, nil); err != nil {
		return err
	}
	key, err := chain.NewKey()
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, hex.EncodeToString(key))
	return nil
}

// keySource says where one repository's key comes from: its 64 hex digits,
// a file holding them, or a shell command printing them. Keys never travel
// on command lines, where ps and shell histories would show them; a file or
// a command (a password manager, a secret store) may be named there.
type keySource struct {
	hex, file, command string
	// names are the variables (or flags) the three came from, for errors.
	names [3]string
}

// The environment variables an encrypted repository's key is read from;
// copy reads its source repository's from the DISKPOINT_FROM_ ones.
var (
	keyVariables     = [3]string{"DISKPOINT_KEY", "DISKPOINT_KEY_FILE", "DISKPOINT_KEY_COMMAND"}
	fromKeyVariables = [3]string{"DISKPOINT_FROM_KEY", "DISKPOINT_FROM_KEY_FILE", "DISKPOINT_FROM_KEY_COMMAND"}
)

// environmentKey is the key source the variables names give.
func environmentKey(names [3]string) keySource {
	return keySource{hex: os.Getenv(names[0]), file: os.Getenv(names[1]), command: os.Getenv(names[2]), names: names}
}

// given reports whether the source names a key at all.
func (s keySource) given() bool { return s.hex != "" || s.file != "" || s.command != "" }

// hint says which variables to set for a key.
func (s keySource) hint() string {
	return fmt.Sprintf("set %s, %s or %s", s.names[0], s.names[1], s.names[2])
}

// keyCommandTimeout bounds a key command, which may wait for a person.
const keyCommandTimeout = 2 * time.Minute

// load returns the key, or nil if the source names none. Errors are
// keyErrors (exit status 12).
func (s keySource) load(ctx context.Context) ([]byte, error) {
	text, from, err := s.loadText(ctx)
	if err != nil || from == "" {
		return nil, err
	}
	key, err := chain.ParseKey(text)
	if err != nil {
		return nil, keyError{fmt.Errorf("%s: %w", from, err)}
	}
	return key, nil
}

// loadText returns what the source gives, as it gives it, and where it
// came from ("" if the source names nothing). Errors are keyErrors.
func (s keySource) loadText(ctx context.Context) (text, from string, err error) {
	var set []string
	for i, v := range []string{s.hex, s.file, s.command} {
		if v != "" {
			set = append(set, s.names[i])
		}
	}
	if len(set) > 1 {
		return "", "", keyError{fmt.Errorf("%s are set: give it one way", strings.Join(set, " and "))}
	}
	switch {
	case s.hex != "":
		return s.hex, s.names[0], nil
	case s.file != "":
		data, err := os.ReadFile(s.file)
		if err != nil {
			return "", "", keyError{fmt.Errorf("%s: %w", s.names[1], err)}
		}
		return string(data), s.names[1] + " " + s.file, nil
	case s.command != "":
		out, err := runKeyCommand(ctx, s.command)
		if err != nil {
			return "", "", keyError{fmt.Errorf("%s %q: %w", s.names[2], s.command, err)}
		}
		return out, s.names[2], nil
	}
	return "", "", nil
}

// runKeyCommand runs command with sh -c and returns what it printed; what
// it said on stderr goes into the error when it fails.
func runKeyCommand(ctx context.Context, command string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, keyCommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, &stdout, &stderr
	cmd.WaitDelay = time.Second // a killed shell's children may hold the pipes
	if err := cmd.Run(); err != nil {
		if msg := oneLine(stderr.String()); msg != "" {
			return "", fmt.Errorf("%w: %s", err, msg)
		}
		return "", err
	}
	return stdout.String(), nil
}

// openRepository opens the repository in dir with the environment's key
// or password.
func openRepository(ctx context.Context, e *env, dir string) (*snapshot.Repository, error) {
	return openRepositoryWithKey(ctx, e, dir, environmentCredential(keyVariables, passwordVariables))
}

// openRepositoryWithKey opens the repository in dir with the credential
// source names, if any. A missing key for an encrypted repository says
// which variables to set; no other error does.
func openRepositoryWithKey(ctx context.Context, e *env, dir string, source credentialSource) (*snapshot.Repository, error) {
	cred, given, err := source.load(ctx)
	if err != nil {
		return nil, err
	}
	repo, err := openLocation(ctx, e, dir, cred)
	switch {
	case errors.Is(err, snapshot.ErrKeyRequired) && !given:
		return nil, fmt.Errorf("%w (%s)", err, source.hint())
	case errors.Is(err, snapshot.ErrNotFound):
		return nil, noRepositoryError{err}
	case err != nil:
		return nil, err
	}
	repo.SetLogger(e.logger())
	return repo, nil
}
