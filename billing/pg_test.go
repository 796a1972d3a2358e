package billing

import (
	"os"
	"testing"

	"github.com/topcdn/topcdn/internal/testkit/pgtest"
)

// pgDSN returns the DSN of a fresh, empty PostgreSQL database for the
// test (pgtest.DSN: skipped where PostgreSQL is missing, unless
// $TOPCDN_REQUIRE_TOOLS=1).
func pgDSN(t *testing.T) string {
	t.Helper()
	return pgtest.DSN(t)
}

// TestMain runs the tests, then stops the throwaway PostgreSQL cluster.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
