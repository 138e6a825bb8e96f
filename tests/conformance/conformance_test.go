// SPIRE's own KeyManager conformance suite (keymanagertest) run against the plugin binary,
// loaded through SPIRE's catalog the way spire-server loads a `plugin_cmd` KeyManager.
//
// Driven by tests/conformance.rs, which starts the fake Key Vault and sets:
//
//	AZKV_CONFORMANCE_PLUGIN       path of the plugin binary
//	AZKV_CONFORMANCE_PLUGIN_DATA  plugin_data body (HCL) without key_identifier_value
//
// plus SSL_CERT_FILE and AZURE_AUTHORITY_HOST, which go-plugin hands on to the plugin process.
package conformance

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	metricsv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/hostservice/common/metrics/v1"
	agentstorev1 "github.com/spiffe/spire-plugin-sdk/proto/spire/hostservice/server/agentstore/v1"
	identityproviderv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/hostservice/server/identityprovider/v1"
	"github.com/spiffe/spire/pkg/common/catalog"
	"github.com/spiffe/spire/pkg/common/hostservice/metricsservice"
	"github.com/spiffe/spire/pkg/common/telemetry"
	"github.com/spiffe/spire/pkg/server/hostservice/agentstore"
	"github.com/spiffe/spire/pkg/server/hostservice/identityprovider"
	"github.com/spiffe/spire/pkg/server/plugin/keymanager"
	keymanagertest "github.com/spiffe/spire/pkg/server/plugin/keymanager/test"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	pluginName  = "azure_key_vault"
	pluginType  = "KeyManager"
	trustDomain = "example.org"
)

func TestKeyManagerConformance(t *testing.T) {
	bin := requireEnv(t, "AZKV_CONFORMANCE_PLUGIN")
	pluginData := requireEnv(t, "AZKV_CONFORMANCE_PLUGIN_DATA")
	checksum := fileSHA256(t, bin)

	keymanagertest.Test(t, keymanagertest.Config{
		Create: func(t *testing.T) keymanager.KeyManager {
			return loadPlugin(t, bin, checksum, pluginData)
		},
		// As SPIRE declares for its built-in azure_key_vault (TestKeyManagerContract): Key Vault
		// signs ES256 only with P-256 and ES384 only with P-384.
		UnsupportedSignatureAlgorithms: map[keymanager.KeyType][]x509.SignatureAlgorithm{
			keymanager.ECP256: {x509.ECDSAWithSHA384, x509.ECDSAWithSHA512},
			keymanager.ECP384: {x509.ECDSAWithSHA256, x509.ECDSAWithSHA512},
		},
	})
}

// The loader itself must notice a plugin that is SIGKILLed at unload, exits uncleanly or logs
// an error; otherwise the checks in loadPlugin could never fail.
func TestUnloadProblemsAreDetected(t *testing.T) {
	clean := []logrus.Entry{
		{Level: logrus.InfoLevel, Message: "plugin process exited"},
		{Level: logrus.WarnLevel, Message: "some warning"},
	}
	require.Empty(t, unloadProblems(clean))
	for _, tc := range []struct {
		name    string
		entry   logrus.Entry
		problem string
	}{
		{"killed", logrus.Entry{Level: logrus.WarnLevel, Message: "plugin failed to exit gracefully"}, "SIGKILLed"},
		{"exit status", logrus.Entry{Level: logrus.ErrorLevel, Message: "plugin process exited"}, "exited uncleanly"},
		{"error log", logrus.Entry{Level: logrus.ErrorLevel, Message: "boom"}, "error: boom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			problems := unloadProblems(append(clean, tc.entry))
			require.Len(t, problems, 1)
			require.Contains(t, problems[0], tc.problem)
		})
	}
}

// loadPlugin starts a fresh plugin process through catalog.Load with a new key identity,
// configured from a server-config `plugins` block as spire-server parses it. The plugin is
// unloaded at test cleanup, which fails the test on any problem unloadProblems names.
func loadPlugin(t *testing.T, bin, checksum, pluginData string) keymanager.KeyManager {
	serverConfig := fmt.Sprintf(`plugins {
	%s %q {
		plugin_cmd = %q
		plugin_checksum = %q
		plugin_data {
%s
			key_identifier_value = %q
		}
	}
}
`, pluginType, pluginName, bin, checksum, pluginData, newServerID(t))

	// Like spire-server's run command: decode the server config, keep `plugins` as an AST and
	// let the catalog build the plugin configs (it re-prints plugin_data as the HCL that
	// Configure receives).
	var parsed struct {
		Plugins ast.Node `hcl:"plugins"`
	}
	require.NoError(t, hcl.Decode(&parsed, serverConfig))
	pluginConfigs, err := catalog.PluginConfigsFromHCLNode(parsed.Plugins)
	require.NoError(t, err)
	require.Len(t, pluginConfigs, 1)
	require.True(t, pluginConfigs[0].IsExternal())

	log, hook := logtest.NewNullLogger()
	log.SetOutput(io.Discard)
	log.SetLevel(logrus.DebugLevel)

	repo := new(keyManagerRepository)
	td := spiffeid.RequireTrustDomainFromString(trustDomain)
	cat, err := catalog.Load(context.Background(), catalog.Config{
		Log:           log,
		CoreConfig:    catalog.CoreConfig{TrustDomain: td},
		PluginConfigs: pluginConfigs,
		// The host services spire-server offers its plugins (pkg/server/catalog). Their
		// dependencies are never set: a KeyManager does not call them.
		HostServices: []pluginsdk.ServiceServer{
			identityproviderv1.IdentityProviderServiceServer(identityprovider.New(identityprovider.Config{TrustDomain: td}).V1()),
			agentstorev1.AgentStoreServiceServer(agentstore.New().V1()),
			metricsv1.MetricsServiceServer(metricsservice.V1(telemetry.Blackhole{})),
		},
	}, repo)
	if err != nil {
		dumpLog(t, hook, logrus.DebugLevel)
		require.NoError(t, err, "catalog.Load")
	}
	require.NotNil(t, repo.KeyManager)

	t.Cleanup(func() {
		closeErr := cat.Close()
		entries := hook.AllEntries()
		problems := unloadProblems(derefEntries(entries))
		if closeErr != nil || len(problems) > 0 || t.Failed() {
			dumpLog(t, hook, logrus.DebugLevel)
		} else {
			dumpLog(t, hook, logrus.WarnLevel)
		}
		assert.NoError(t, closeErr, "unloading the plugin")
		for _, p := range problems {
			t.Error(p)
		}
		assert.True(t, hasEntry(entries, logrus.InfoLevel, "plugin process exited"),
			"go-plugin did not report the plugin's exit")
	})
	return repo.KeyManager
}

// unloadProblems names what the catalog's log shows went wrong: go-plugin killing the process
// after its 2-second grace period, the process exiting with an error status, or any other
// error-level entry (the plugin's own stderr is relayed here at its level).
func unloadProblems(entries []logrus.Entry) []string {
	var problems []string
	for _, e := range entries {
		switch {
		case e.Message == "plugin failed to exit gracefully":
			problems = append(problems, "the plugin did not exit within go-plugin's grace period and was SIGKILLed")
		case e.Message == "plugin process exited" && e.Level <= logrus.ErrorLevel:
			problems = append(problems, fmt.Sprintf("the plugin exited uncleanly: %v", e.Data))
		case e.Level <= logrus.ErrorLevel:
			problems = append(problems, fmt.Sprintf("logged at %s: %s %v", e.Level, e.Message, e.Data))
		}
	}
	return problems
}

func hasEntry(entries []*logrus.Entry, level logrus.Level, msg string) bool {
	for _, e := range entries {
		if e.Level == level && e.Message == msg {
			return true
		}
	}
	return false
}

func derefEntries(entries []*logrus.Entry) []logrus.Entry {
	out := make([]logrus.Entry, 0, len(entries))
	for _, e := range entries {
		out = append(out, *e)
	}
	return out
}

// dumpLog prints the catalog's log entries at `upTo` or more severe.
func dumpLog(t *testing.T, hook *logtest.Hook, upTo logrus.Level) {
	for _, e := range hook.AllEntries() {
		if e.Level > upTo {
			continue
		}
		line, err := e.String()
		if err != nil {
			line = e.Message
		}
		t.Logf("catalog log: %s", strings.TrimRight(line, "\n"))
	}
}

// keyManagerRepository binds one KeyManager, as spire-server's catalog does for the
// KeyManager type (pkg/server/catalog/keymanager.go), without the built-ins.
type keyManagerRepository struct {
	keymanager.Repository
}

func (r *keyManagerRepository) Plugins() map[string]catalog.PluginRepo {
	return map[string]catalog.PluginRepo{pluginType: r}
}

func (r *keyManagerRepository) Services() []catalog.ServiceRepo { return nil }

func (r *keyManagerRepository) Binder() any { return r.SetKeyManager }

func (r *keyManagerRepository) Constraints() catalog.Constraints { return catalog.ExactlyOne() }

func (r *keyManagerRepository) Versions() []catalog.Version {
	return []catalog.Version{keyManagerV1{}}
}

func (r *keyManagerRepository) BuiltIns() []catalog.BuiltIn { return nil }

type keyManagerV1 struct{}

func (keyManagerV1) New() catalog.Facade { return new(keymanager.V1) }
func (keyManagerV1) Deprecated() bool    { return false }

func requireEnv(t *testing.T, name string) string {
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set; run this suite through `cargo test --test conformance`", name)
	}
	return v
}

func fileSHA256(t *testing.T, path string) string {
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// A fresh key identity per load, so each load starts with an empty key set.
func newServerID(t *testing.T) string {
	b := make([]byte, 8)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return "conformance-" + hex.EncodeToString(b)
}
