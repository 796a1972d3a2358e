package layout

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/topcdn/topcdn/"

// Servers and stores that only their own commands may link. pgx is not
// among the drivers: Caddy's own HTTP app links it (smallstep's PKI
// storage), so every Caddy build has it; billing's use of it is caught by
// forbidding billing.
var (
	sqlDrivers = []string{"modernc.org/sqlite", module + "sqlitedb", module + "sqldb"}
	servers    = []string{module + "origin", module + "dnsroute", module + "billing", module + "storage"}
	blockStore = []string{"github.com/ipfs/go-ds-flatfs"}
)

// TestDependencies lists each package's dependencies with go list and
// checks that none it must not link is among them.
func TestDependencies(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go tool on the PATH")
	}
	concat := func(lists ...[]string) []string {
		var out []string
		for _, l := range lists {
			out = append(out, l...)
		}
		return out
	}
	leaf := concat(sqlDrivers, servers, blockStore)
	noPgx := concat(leaf, []string{"github.com/jackc/pgx/v5"}) // packages that link no Caddy
	tests := []struct {
		pkg    string
		forbid []string
	}{
		{"edge", concat(noPgx, []string{module + "caddymodule"})},
		{"caddymodule", leaf},
		{"erasure", concat(noPgx, []string{module + "edge"})},
		{"storageapi", noPgx},
		{"originapi", noPgx},
		{"billingapi", noPgx},
		{"billing/witness", noPgx},
		{"dnsrouteapi", noPgx},
		{"publish", noPgx},
		{"identity", noPgx},
		{"dag", noPgx},
		{"dashboard", concat(sqlDrivers, servers)},
		{"storage", []string{module + "origin", module + "dnsroute", module + "billing", "github.com/jackc/pgx/v5"}},
		{"dnsroute", concat(sqlDrivers, []string{module + "origin", module + "billing", module + "storage", "github.com/jackc/pgx/v5"}, blockStore)},
		{"billing", []string{module + "origin", module + "dnsroute", module + "storage", module + "caddymodule", module + "edge"}},
		{"origin", []string{module + "billing", module + "dnsroute", module + "storage", module + "caddymodule", module + "edge"}},
	}
	for _, tc := range tests {
		t.Run(tc.pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", module+tc.pkg).Output()
			if err != nil {
				t.Fatalf("go list -deps %s: %v", tc.pkg, err)
			}
			deps := map[string]bool{}
			for _, d := range strings.Fields(string(out)) {
				deps[d] = true
			}
			for _, f := range tc.forbid {
				if deps[f] {
					t.Errorf("%s links %s", tc.pkg, f)
				}
			}
		})
	}
}
