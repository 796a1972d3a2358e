package sqldb_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/topcdn/topcdn/sqldb"
)

func ExampleOpen() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "sqldb-example-")
	defer os.RemoveAll(dir)
	// The same code runs on PostgreSQL with a "postgres://…" DSN.
	db, err := sqldb.Open(ctx, filepath.Join(dir, "app.db"), sqldb.Schema{Shared: []string{
		`CREATE TABLE notes (id {{id}}, body TEXT NOT NULL, at BIGINT NOT NULL)`,
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	var id int64
	err = sqldb.InTx(ctx, db, func(tx *sqldb.Tx) error {
		return tx.QueryRowContext(ctx, `INSERT INTO notes (body, at) VALUES (?, ?) RETURNING id`, "hello", 1).Scan(&id)
	})
	fmt.Println(id, err)
	// Output: 1 <nil>
}
