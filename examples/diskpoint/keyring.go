package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/diskpoint/diskpoint/chain"
)

// An encrypted format version 2 repository has a key ring: any number of
// credentials, each a 256-bit key (as keygen prints) or a password, each
// opening the same random master key. Commands take the credential from
// the DISKPOINT_KEY variables or the DISKPOINT_PASSWORD ones (one of the
// two); "key add" and "key passwd" take the new one from the
// DISKPOINT_NEW_KEY or DISKPOINT_NEW_PASSWORD variables. Like keys,
// passwords never travel on command lines.

// The environment variables a password is read from, mirroring the key's.
var (
	passwordVariables     = [3]string{"DISKPOINT_PASSWORD", "DISKPOINT_PASSWORD_FILE", "DISKPOINT_PASSWORD_COMMAND"}
	fromPasswordVariables = [3]string{"DISKPOINT_FROM_PASSWORD", "DISKPOINT_FROM_PASSWORD_FILE", "DISKPOINT_FROM_PASSWORD_COMMAND"}
	newKeyVariables       = [3]string{"DISKPOINT_NEW_KEY", "DISKPOINT_NEW_KEY_FILE", "DISKPOINT_NEW_KEY_COMMAND"}
	newPasswordVariables  = [3]string{"DISKPOINT_NEW_PASSWORD", "DISKPOINT_NEW_PASSWORD_FILE", "DISKPOINT_NEW_PASSWORD_COMMAND"}
)

// credentialSource says where a credential comes from: a key source or a
// password source (the same three ways each), at most one of them set.
type credentialSource struct {
	key, password keySource
}

// environmentCredential is the credential source the variables give.
func environmentCredential(keyNames, passwordNames [3]string) credentialSource {
	return credentialSource{key: environmentKey(keyNames), password: environmentKey(passwordNames)}
}

func (s credentialSource) given() bool { return s.key.given() || s.password.given() }

// hint says which variables to set for a credential.
func (s credentialSource) hint() string {
	if s.password.names[0] == "" {
		return s.key.hint()
	}
	return fmt.Sprintf("%s; or for a password %s, %s or %s", s.key.hint(), s.password.names[0], s.password.names[1], s.password.names[2])
}

// load returns the credential, and whether one was given: the zero
// credential and false if the source names none. Errors are keyErrors.
func (s credentialSource) load(ctx context.Context) (chain.Credential, bool, error) {
	switch {
	case s.key.given() && s.password.given():
		return chain.Credential{}, false, keyError{fmt.Errorf("both a key (%s) and a password (%s) are given: give one", s.key.names[0]+"…", s.password.names[0]+"…")}
	case s.key.given():
		key, err := s.key.load(ctx)
		if err != nil {
			return chain.Credential{}, false, err
		}
		cred, err := chain.KeyCredential(key)
		if err != nil {
			return chain.Credential{}, false, keyError{err}
		}
		return cred, true, nil
	case s.password.given():
		password, err := s.loadPassword(ctx)
		if err != nil {
			return chain.Credential{}, false, err
		}
		cred, err := chain.PasswordCredential(password)
		if err != nil {
			return chain.Credential{}, false, keyError{err}
		}
		return cred, true, nil
	}
	return chain.Credential{}, false, nil
}

// loadPassword reads the password: as the variable gives it, or a file's
// or a command's output without its final line end (so that echo and
// editors do not add a newline to the password). It must not be empty.
func (s credentialSource) loadPassword(ctx context.Context) (string, error) {
	text, from, err := s.password.loadText(ctx)
	if err != nil {
		return "", err
	}
	if from != s.password.names[0] {
		text = strings.TrimSuffix(strings.TrimSuffix(text, "\n"), "\r")
	}
	if text == "" {
		return "", keyError{fmt.Errorf("%s: the password is empty", from)}
	}
	return text, nil
}

func runKey(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
	repoDir := fs.String("repo", "", repoFlagUsage)
	label := fs.String("label", "", "key add, key passwd: a `note` on the new key, shown by key list")
	id := fs.String("id", "", "key remove: the `ID` of the key to remove (key list shows it)")
	asJSON := fs.Bool("json", false, "key list: print a JSON array")
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if err := parse(fs, args, nil); err != nil {
			return err
		}
		return usageError{"key needs a subcommand: add, list, remove or passwd"}
	}
	sub := args[0]
	if err := parse(fs, args[1:], map[string]*string{"repo": repoDir}); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("key %s takes no arguments, got %q", sub, fs.Args())}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	allowed := map[string][]string{"add": {"label"}, "passwd": {"label"}, "list": {"json"}, "remove": {"id"}}
	flags, ok := allowed[sub]
	if !ok {
		return usageError{fmt.Sprintf("key %q: the subcommands are add, list, remove and passwd", sub)}
	}
	for _, name := range []string{"label", "id", "json"} {
		if set[name] && !slices.Contains(flags, name) {
			return usageError{fmt.Sprintf("-%s is not a flag of key %s", name, sub)}
		}
	}
	if sub == "remove" && *id == "" {
		return usageError{"key remove needs -id ID (key list shows the IDs)"}
	}
	repo, err := openRepository(ctx, e, *repoDir)
	if err != nil {
		return err
	}
	defer repo.Close()
	if repo.UsedKey() == "" {
		return fmt.Errorf("repository %s has no key ring: only an encrypted format version 2 repository has one (diskpoint init -format 2 -encrypt makes one): %w", *repoDir, chain.ErrUnsupportedVersion)
	}
	switch sub {
	case "list":
		return printKeys(ctx, e, repo.UsedKey(), *asJSON, func(ctx context.Context) ([]chain.KeyInfo, error) { return repo.Keys(ctx) })
	case "remove":
		if err := repo.RemoveKey(ctx, *id); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "removed key %s\n", *id)
		return nil
	}
	newCred := environmentCredential(newKeyVariables, newPasswordVariables)
	if !newCred.given() {
		return usageError{fmt.Sprintf("key %s needs the new credential: %s", sub, newCred.hint())}
	}
	cred, _, err := newCred.load(ctx)
	if err != nil {
		return err
	}
	opts := chain.KeyOptions{Label: *label}
	if sub == "add" {
		added, err := repo.AddKey(ctx, cred, opts)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "added key %s\n", added)
		return nil
	}
	old := repo.UsedKey()
	changed, err := repo.ChangeKey(ctx, cred, opts)
	if err != nil {
		if changed != "" {
			return fmt.Errorf("new key %s added, old key %s not removed (remove it with key remove -id %s): %w", changed, old, old, err)
		}
		return err
	}
	fmt.Fprintf(e.stdout, "replaced key %s by key %s\n", old, changed)
	return nil
}

// printKeys prints the key ring as a table or JSON; used is the key in use.
func printKeys(ctx context.Context, e *env, used string, asJSON bool, list func(context.Context) ([]chain.KeyInfo, error)) error {
	keys, err := list(ctx)
	if err != nil {
		return err
	}
	type key struct {
		ID      string    `json:"id"`
		KDF     string    `json:"kdf"`
		Created time.Time `json:"created"`
		Host    string    `json:"host"`
		Label   string    `json:"label"`
		InUse   bool      `json:"in_use"`
		Error   string    `json:"error,omitempty"`
	}
	out := make([]key, 0, len(keys))
	for _, k := range keys {
		item := key{ID: k.ID, KDF: k.KDF, Created: k.Created, Host: k.Host, Label: k.Label, InUse: k.ID == used}
		if k.Err != nil {
			item.Error = k.Err.Error()
		}
		out = append(out, item)
	}
	if asJSON {
		return printJSON(e, out)
	}
	tw := tabwriter.NewWriter(e.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, " \tID\tKDF\tCREATED\tHOST\tLABEL")
	for _, k := range out {
		mark := " "
		if k.InUse {
			mark = "*"
		}
		created := k.Created.Local().Format("2006-01-02 15:04:05 MST")
		if k.Error != "" {
			created, k.Label = "-", "unreadable: "+k.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", mark, k.ID, k.KDF, created, k.Host, k.Label)
	}
	return tw.Flush()
}

// initCredential is the credential init -encrypt uses: the key or the
// password the environment gives. A password needs format version 2.
func initCredential(ctx context.Context, format int) (key []byte, password string, err error) {
	source := environmentCredential(keyVariables, passwordVariables)
	if !source.given() {
		return nil, "", usageError{"-encrypt needs a key or a password: " + source.hint() + " (diskpoint keygen makes a key)"}
	}
	if source.key.given() && source.password.given() {
		_, _, err := source.load(ctx)
		return nil, "", err
	}
	if source.password.given() {
		if format != chain.FormatVersion2 {
			return nil, "", usageError{"-encrypt with a password needs -format 2 (format 1 is encrypted with a key)"}
		}
		password, err = source.loadPassword(ctx)
		return nil, password, err
	}
	key, err = source.key.load(ctx)
	return key, "", err
}
