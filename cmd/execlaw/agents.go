package main

import (
	"slices"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/agent/builtin"
	"github.com/execlaw/execlaw/internal/agent/claudecode"
	"github.com/execlaw/execlaw/internal/agent/nullclaw"
	"github.com/execlaw/execlaw/internal/sandbox/detect"
)

// agentKinds are every kind of agent this build has, the default first. A
// new kind is one descriptor in its own package and one line here.
func agentKinds() *agent.Registry {
	r, err := agent.NewRegistry(builtin.Kind, claudecode.Kind, nullclaw.Kind)
	if err != nil {
		panic(err) // the list above is wrong: a programming error
	}
	return r
}

// offeredAgents are the kinds the chosen sandbox can run: the in-VM ones
// only where sessions run a guest image (a VM, or a pod of the kubernetes
// driver) that carries them. Their key stays on the server either way.
func offeredAgents(guestImage bool, report detect.Report) (*agent.Registry, error) {
	return agentKinds().Offered(guestImage, func(name string) bool { return slices.Contains(report.ImageAgents, name) })
}
