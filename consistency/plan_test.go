package consistency_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/diskpoint/diskpoint/consistency"
)

// PlanHooks maps settings to hooks and policy as Azure Backup maps a
// VMSnapshotScriptPluginConfig.json, and refuses settings that the mode or
// the config would silently ignore.
func TestPlanHooks(t *testing.T) {
	azure := func(continueOnFailure, fsFreeze bool) *consistency.ScriptConfig {
		cfg, err := consistency.ParseScriptConfig([]byte(`{"preScriptLocation":"/etc/pre.sh","postScriptLocation":"/etc/post.sh",` +
			`"continueBackupOnFailure":` + boolJSON(continueOnFailure) + `,"fsFreezeEnabled":` + boolJSON(fsFreeze) + `}`))
		if err != nil {
			t.Fatal(err)
		}
		return &cfg
	}
	fail, skip := consistency.Fail, consistency.Skip
	mnt := []string{"/srv/db"}
	script := func(pre, post string, timeout int, continueOnFailure, fsFreeze bool) consistency.Hook {
		return &consistency.ScriptHook{Config: consistency.ScriptConfig{PreScriptLocation: pre, PostScriptLocation: post,
			TimeoutInSeconds: timeout, ContinueBackupOnFailure: continueOnFailure, FsFreezeEnabled: fsFreeze}}
	}
	freeze := &consistency.FSFreezeHook{MountPoints: mnt}
	for _, tc := range []struct {
		name      string
		settings  consistency.HookSettings
		mode      consistency.Mode
		hooks     []consistency.Hook
		onFailure consistency.OnFailure
		refused   string // part of the error, when refused
	}{
		{name: "nothing: crash", mode: consistency.Crash},
		{name: "freeze", settings: consistency.HookSettings{Mode: consistency.FileSystem, FreezeMountPoints: mnt},
			mode: consistency.FileSystem, hooks: []consistency.Hook{freeze}},
		{name: "pre and post get Azure's defaults: 60 s, continue, freeze",
			settings: consistency.HookSettings{Mode: consistency.Application, PreScript: "/pre", PostScript: "/post", FreezeMountPoints: mnt},
			mode:     consistency.Application, hooks: []consistency.Hook{script("/pre", "/post", 60, true, true), freeze}},
		{name: "config: continueBackupOnFailure false fails",
			settings: consistency.HookSettings{Mode: consistency.Application, ScriptConfig: azure(false, true), FreezeMountPoints: mnt},
			mode:     consistency.Application, hooks: []consistency.Hook{script("/etc/pre.sh", "/etc/post.sh", 60, false, true), freeze}, onFailure: consistency.Fail},
		{name: "config: continueBackupOnFailure true falls back",
			settings: consistency.HookSettings{Mode: consistency.Application, ScriptConfig: azure(true, true)},
			mode:     consistency.Application, hooks: []consistency.Hook{script("/etc/pre.sh", "/etc/post.sh", 60, true, true)}},
		{name: "an explicit policy wins over the config's",
			settings: consistency.HookSettings{Mode: consistency.Application, ScriptConfig: azure(false, true), OnFailure: &skip},
			mode:     consistency.Application, hooks: []consistency.Hook{script("/etc/pre.sh", "/etc/post.sh", 60, false, true)}, onFailure: consistency.Skip},
		{name: "fsFreezeEnabled false and no mount points",
			settings: consistency.HookSettings{Mode: consistency.Application, ScriptConfig: azure(true, false)},
			mode:     consistency.Application, hooks: []consistency.Hook{script("/etc/pre.sh", "/etc/post.sh", 60, true, false)}},
		{name: "insecure scripts allowed", settings: consistency.HookSettings{Mode: consistency.Application, PreScript: "/pre", AllowInsecure: true},
			mode: consistency.Application, hooks: []consistency.Hook{&consistency.ScriptHook{AllowInsecure: true, Config: consistency.ScriptConfig{
				PreScriptLocation: "/pre", TimeoutInSeconds: 60, ContinueBackupOnFailure: true, FsFreezeEnabled: true}}}},

		{name: "freeze in crash mode", settings: consistency.HookSettings{FreezeMountPoints: mnt}, refused: "crash mode freezes nothing"},
		{name: "scripts in filesystem mode", settings: consistency.HookSettings{Mode: consistency.FileSystem, PreScript: "/pre"},
			refused: "scripts run only in application mode"},
		{name: "config in crash mode", settings: consistency.HookSettings{Mode: consistency.Crash, ScriptConfig: azure(true, true)},
			refused: "scripts run only in application mode"},
		{name: "policy in crash mode", settings: consistency.HookSettings{OnFailure: &fail}, refused: "crash mode runs no hooks that could fail"},
		{name: "config and direct scripts", settings: consistency.HookSettings{Mode: consistency.Application, ScriptConfig: azure(true, true), PostScript: "/post"},
			refused: "give them one way"},
		{name: "freeze with fsFreezeEnabled false",
			settings: consistency.HookSettings{Mode: consistency.Application, ScriptConfig: azure(true, false), FreezeMountPoints: mnt},
			refused:  "fsFreezeEnabled false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan, err := consistency.PlanHooks(tc.settings)
			if tc.refused != "" {
				if !errors.Is(err, consistency.ErrConflictingSettings) || !strings.Contains(err.Error(), tc.refused) {
					t.Fatalf("PlanHooks: %+v, %v; want refused with %q", plan, err, tc.refused)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if plan.Mode != tc.mode || plan.OnFailure != tc.onFailure || !reflect.DeepEqual(plan.Hooks, tc.hooks) {
				t.Errorf("PlanHooks = mode %s, policy %v, hooks %s; want %s, %v, %s", plan.Mode, plan.OnFailure, describe(plan.Hooks), tc.mode, tc.onFailure, describe(tc.hooks))
			}
		})
	}
	if _, err := consistency.PlanHooks(consistency.HookSettings{Mode: consistency.Inconsistent}); err == nil || errors.Is(err, consistency.ErrConflictingSettings) {
		t.Errorf("asking for inconsistent: %v; want ParseMode's error", err)
	}
}

func boolJSON(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// describe prints hooks with their settings.
func describe(hooks []consistency.Hook) string {
	parts := make([]string, len(hooks))
	for i, h := range hooks {
		parts[i] = fmt.Sprintf("%s%+v", h.Name(), h)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
