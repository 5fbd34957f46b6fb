package consistency

import (
	"errors"
	"fmt"
)

// HookSettings are the consistency settings an operator gives for a
// restore point, the way Azure Backup takes them: the mode, pre and post
// scripts (in a VMSnapshotScriptPluginConfig.json, or given directly),
// file systems to freeze, and what to do when a hook fails. PlanHooks turns
// them into hooks and a failure policy.
type HookSettings struct {
	// Mode is the mode to ask for; "" means Crash.
	Mode Mode
	// ScriptConfig is an Azure-style VMSnapshotScriptPluginConfig.json, as
	// LoadScriptConfig or ParseScriptConfig read it; nil if none.
	ScriptConfig *ScriptConfig
	// PreScript and PostScript are scripts given without a config file;
	// they run with Azure's defaults: a 60 s timeout, no retries,
	// continueBackupOnFailure and fsFreezeEnabled true.
	PreScript, PostScript string
	// FreezeMountPoints are file systems to freeze with FIFREEZE.
	FreezeMountPoints []string
	// OnFailure, if set, says what to do when a hook fails to freeze; nil
	// takes it from the script config (continueBackupOnFailure false means
	// Fail), else FallBack.
	OnFailure *OnFailure
	// AllowInsecure runs scripts that others can write (ScriptHook.AllowInsecure).
	AllowInsecure bool
}

// HookPlan is what PlanHooks makes of HookSettings: what a create takes as
// its mode, hooks and failure policy.
type HookPlan struct {
	Mode      Mode
	Hooks     []Hook
	OnFailure OnFailure
}

// ErrConflictingSettings: HookSettings of which one would be silently
// ignored, such as file systems to freeze in crash mode. A restore point
// records what happened, and a setting that does nothing would make that a
// surprise.
var ErrConflictingSettings = errors.New("conflicting consistency settings")

// PlanHooks maps consistency settings to hooks and a failure policy, as
// Azure Backup does with VMSnapshotScriptPluginConfig.json:
//
//   - scripts (from the config, or PreScript and PostScript) become one
//     ScriptHook, at application level;
//   - FreezeMountPoints become an FSFreezeHook, unless the config sets
//     fsFreezeEnabled false, which then contradicts them;
//   - a config's continueBackupOnFailure false makes the policy Fail, unless
//     OnFailure says otherwise; otherwise it is FallBack.
//
// It refuses, with an error wrapping ErrConflictingSettings, settings the
// mode would ignore: file systems to freeze, or an OnFailure, in crash mode;
// scripts outside application mode; scripts both in a config and given
// directly; FreezeMountPoints with fsFreezeEnabled false. A Mode that cannot
// be asked for is an error too (see ParseMode).
func PlanHooks(s HookSettings) (HookPlan, error) {
	mode, err := ParseMode(string(s.Mode))
	if err != nil {
		return HookPlan{}, err
	}
	direct := s.PreScript != "" || s.PostScript != ""
	scripts := s.ScriptConfig != nil || direct
	switch {
	case mode == Crash && len(s.FreezeMountPoints) > 0:
		return HookPlan{}, conflict("file systems to freeze with crash consistency: crash mode freezes nothing; ask for filesystem or application consistency")
	case mode != Application && scripts:
		return HookPlan{}, conflict("scripts with %s consistency: scripts run only in application mode", mode)
	case mode == Crash && s.OnFailure != nil:
		return HookPlan{}, conflict("a failure policy with crash consistency: crash mode runs no hooks that could fail")
	case s.ScriptConfig != nil && direct:
		return HookPlan{}, conflict("scripts both in a script config and given directly: give them one way")
	case s.ScriptConfig != nil && !s.ScriptConfig.FsFreezeEnabled && len(s.FreezeMountPoints) > 0:
		return HookPlan{}, conflict("file systems to freeze with a script config that sets fsFreezeEnabled false: drop one of them")
	}
	plan := HookPlan{Mode: mode, OnFailure: FallBack}
	fsFreeze := true
	switch {
	case s.ScriptConfig != nil:
		plan.Hooks = append(plan.Hooks, &ScriptHook{Config: *s.ScriptConfig, AllowInsecure: s.AllowInsecure})
		fsFreeze = s.ScriptConfig.FsFreezeEnabled
		if !s.ScriptConfig.ContinueBackupOnFailure {
			plan.OnFailure = Fail
		}
	case direct:
		plan.Hooks = append(plan.Hooks, &ScriptHook{AllowInsecure: s.AllowInsecure, Config: ScriptConfig{
			PreScriptLocation: s.PreScript, PostScriptLocation: s.PostScript,
			TimeoutInSeconds: defaultScriptTimeout, ContinueBackupOnFailure: true, FsFreezeEnabled: true,
		}})
	}
	if len(s.FreezeMountPoints) > 0 && fsFreeze {
		plan.Hooks = append(plan.Hooks, &FSFreezeHook{MountPoints: s.FreezeMountPoints})
	}
	if s.OnFailure != nil {
		plan.OnFailure = *s.OnFailure
	}
	return plan, nil
}

func conflict(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrConflictingSettings, fmt.Sprintf(format, args...))
}
