package consistency_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/diskpoint/diskpoint/consistency"
)

// hypervisorPause is a hook of one's own: it pauses a VM's I/O for the
// instant its disks are captured.
type hypervisorPause struct{ vm string }

func (h hypervisorPause) Name() string                                  { return "pause " + h.vm }
func (h hypervisorPause) Level() consistency.Level                      { return consistency.PauseLevel }
func (h hypervisorPause) Ready(context.Context, *consistency.Run) error { return nil }

func (h hypervisorPause) Freeze(_ context.Context, run *consistency.Run) error {
	fmt.Println("pause", h.vm)
	run.Command = "virsh suspend " + h.vm // what the hook log shows
	return nil
}

func (h hypervisorPause) Thaw(_ context.Context, run *consistency.Run) error {
	fmt.Println("resume", h.vm)
	run.Command = "virsh resume " + h.vm
	return nil
}

// Implementing consistency.Hook: the Coordinator calls Freeze, captures,
// and always calls Thaw; snapshot.CreateOptions.Hooks takes the same hooks.
func ExampleHook() {
	c := &consistency.Coordinator{Hooks: []consistency.Hook{hypervisorPause{vm: "web01"}}}
	_, err := c.Run(context.Background(), consistency.Crash, func(context.Context) error {
		fmt.Println("capture the disks")
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// pause web01
	// capture the disks
	// resume web01
}

// Mapping an Azure-style VMSnapshotScriptPluginConfig.json to hooks and a
// failure policy, as the diskpoint CLI does: continueBackupOnFailure false
// makes a failing pre script fail the create.
func ExamplePlanHooks() {
	cfg, err := consistency.ParseScriptConfig([]byte(`{
		"preScriptLocation": "/etc/azure/pre.sh",
		"postScriptLocation": "/etc/azure/post.sh",
		"continueBackupOnFailure": false
	}`)) // or LoadScriptConfig(path, false), which checks the file's permissions
	if err != nil {
		log.Fatal(err)
	}
	plan, err := consistency.PlanHooks(consistency.HookSettings{
		Mode:              consistency.Application,
		ScriptConfig:      &cfg,
		FreezeMountPoints: []string{"/srv/db"},
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, h := range plan.Hooks {
		fmt.Println(h.Name(), h.Level())
	}
	fmt.Println("fails on hook failure:", plan.OnFailure == consistency.Fail, "script timeout:", cfg.TimeoutInSeconds, "s")

	_, err = consistency.PlanHooks(consistency.HookSettings{Mode: consistency.Crash, FreezeMountPoints: []string{"/srv/db"}})
	fmt.Println(errors.Is(err, consistency.ErrConflictingSettings))
	// Output:
	// script application
	// fsfreeze filesystem
	// fails on hook failure: true script timeout: 60 s
	// true
}
