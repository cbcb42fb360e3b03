package nullclaw

// The end-to-end tests (e2e_test.go) run the whole server, which imports
// this package, so they are in package nullclaw_test; these are the
// adapter's internals they check against.
const (
	BinaryEnv   = binaryEnv
	GatewayPort = gatewayPort
	ProxyPort   = proxyPort
)

var StateDir = stateDir
