package firecracker

import "github.com/execlaw/execlaw/internal/sandbox/vm"

// NetworkProvider and NetAttachment are the VM drivers' shared networking
// interfaces. The driver calls Setup once per session with network "full"
// and Teardown exactly once for every successful Setup; the VMM is started
// with NetAttachment.Start so it runs in the session's network namespace.
type (
	NetworkProvider = vm.NetworkProvider
	NetAttachment   = vm.NetAttachment
)
