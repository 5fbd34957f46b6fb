package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/diskpoint/diskpoint/snapshot"
)

// Exit statuses, as restic 0.17 numbers them where they mean the same.
const (
	exitOK           = 0
	exitFailure      = 1
	exitUsage        = 2
	exitDamage       = 3 // verify found damage
	exitNoRepository = 10
	exitLocked       = 11
	exitKey          = 12 // wrong or missing key
	exitThrottled    = 13 // a rate limit refused: retry later
	exitInterrupted  = 130
	exitTerminated   = 143
)

// errInterrupted and errTerminated are why a command's context was
// cancelled: SIGINT (Ctrl-C) or SIGTERM.
var (
	errInterrupted = errors.New("interrupted")
	errTerminated  = errors.New("terminated")
)

// errDamaged marks verify's finding damage (exit status 3): errors.Is
// finds it in a damageError.
var errDamaged = errors.New("damage found")

// damageError is verify's report of damage; its message names the objects.
type damageError struct{ error }

func (damageError) Is(target error) bool { return target == errDamaged }

// signalContext returns a context that SIGINT and SIGTERM cancel, with the
// signal as its cause.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-signals:
			if sig == syscall.SIGTERM {
				cancel(errTerminated)
			} else {
				cancel(errInterrupted)
			}
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(signals)
		close(done)
		cancel(nil)
	}
}

// noRepositoryError: there is no repository where one was to be opened.
type noRepositoryError struct{ err error }

func (e noRepositoryError) Error() string { return e.err.Error() }
func (e noRepositoryError) Unwrap() error { return e.err }

// keyError: the key could not be had (a variable, file or command failed).
type keyError struct{ err error }

func (e keyError) Error() string { return e.err.Error() }
func (e keyError) Unwrap() error { return e.err }

// rephrasedError is err said in the CLI's words.
type rephrasedError struct {
	msg string
	err error
}

func (e rephrasedError) Error() string { return e.msg }
func (e rephrasedError) Unwrap() error { return e.err }

// exitStatus prints err, if any, as one line on stderr and returns the
// exit status that says what kind of failure it was.
func exitStatus(ctx context.Context, e *env, name string, err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	fmt.Fprintf(e.stderr, "diskpoint %s: %s\n", name, oneLine(err.Error()))
	switch cause := context.Cause(ctx); {
	case ctx.Err() != nil && errors.Is(cause, errInterrupted):
		return exitInterrupted
	case ctx.Err() != nil && errors.Is(cause, errTerminated):
		return exitTerminated
	case errors.As(err, new(usageError)):
		return exitUsage
	case errors.Is(err, errDamaged):
		return exitDamage
	case errors.As(err, new(noRepositoryError)):
		return exitNoRepository
	case errors.Is(err, snapshot.ErrLocked):
		return exitLocked
	case errors.Is(err, snapshot.ErrWrongKey), errors.Is(err, snapshot.ErrKeyRequired), errors.As(err, new(keyError)):
		return exitKey
	case errors.Is(err, snapshot.ErrThrottled): // the message says when to retry
		return exitThrottled
	}
	return exitFailure
}
