package origin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/origin/origindb"
	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/sqldb"
)

// Accounting. A publisher is charged for the bytes of the blocks its
// uploads newly store: a block the origin already holds, whoever uploaded
// it, costs nothing again, so each stored byte is charged to exactly one
// publisher (the first to upload it). Nothing is ever deleted, so usage
// only grows.
//
// An upload reserves its new bytes before any block is written, in one
// transaction that also checks the quota, so concurrent uploads by one
// publisher, on any origin sharing the database, cannot together cross
// it; once its blocks are written the reservation is settled to the bytes
// actually stored. A reservation is a row (table reservations) that
// lapses after reservationTTL: an origin killed between the two leaks
// nothing for good. A publisher's usage is what its settled uploads
// stored (publishers.used_bytes) plus its live reservations.

// reservationTTL is how long an upload's reservation counts against its
// publisher's quota unless settled first: longer than any upload takes.
const reservationTTL = time.Hour

// usedSQL is a publisher's usage at a time: the bytes its settled uploads
// stored and its live reservations. Its arguments: the publisher twice,
// the time.
const usedSQL = `COALESCE((SELECT used_bytes FROM publishers WHERE peer_id = ?), 0) +
	(SELECT CAST(COALESCE(sum(bytes), 0) AS BIGINT) FROM reservations WHERE publisher = ? AND expires >= ?)`

// reserve reserves n bytes for publisher p ahead of its upload, or refuses
// with ErrOverQuota if that would take p over Config.PublisherQuota, and
// returns the reservation's ID ("" for none: n is 0). An upload that adds
// nothing is never refused.
func (o *Origin) reserve(ctx context.Context, p peer.ID, n int64) (string, error) {
	if n <= 0 {
		return "", nil
	}
	now, err := o.db.Now(ctx)
	if err != nil {
		return "", fmt.Errorf("origin: reserve quota: %w", err)
	}
	b := make([]byte, 16)
	rand.Read(b)
	id := hex.EncodeToString(b)
	err = sqldb.InTx(ctx, o.db, func(tx *sqldb.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM reservations WHERE expires < ?`, now.UnixNano()); err != nil {
			return fmt.Errorf("origin: reserve quota: %w", err)
		}
		var used int64
		if err := tx.QueryRowContext(ctx, `SELECT `+usedSQL, p.String(), p.String(), now.UnixNano()).Scan(&used); err != nil {
			return fmt.Errorf("origin: reserve quota: %w", err)
		}
		if q := o.cfg.PublisherQuota; q > 0 && used+n > q {
			return errorf(ErrOverQuota, "publisher %s has stored %s of its %s quota; this upload would add %s more",
				p, humanize.IBytes(uint64(used)), humanize.IBytes(uint64(q)), humanize.IBytes(uint64(n)))
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO reservations (id, publisher, bytes, holder, expires) VALUES (?, ?, ?, ?, ?)`,
			id, p.String(), n, o.key.ID.String(), now.Add(reservationTTL).UnixNano()); err != nil {
			return fmt.Errorf("origin: reserve quota: %w", err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return id, nil
}

// settle replaces an upload's reservation (reservation, from reserve) by
// the bytes it stored. For an accepted upload (roots set) it also counts
// the upload and records its roots and who uploaded them, in the same
// transaction. It returns the publisher's usage after.
func (o *Origin) settle(ctx context.Context, p peer.ID, reservation string, stored int64, roots []cid.Cid) (int64, error) {
	now := o.now()
	dbNow, err := o.db.Now(ctx)
	if err != nil {
		return 0, fmt.Errorf("origin: settle quota: %w", err)
	}
	accepted, last := int64(0), int64(0)
	if roots != nil {
		accepted, last = 1, now.UnixNano()
	}
	var used int64
	err = sqldb.InTx(ctx, o.db, func(tx *sqldb.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM reservations WHERE id = ?`, reservation); err != nil {
			return fmt.Errorf("origin: settle quota: %w", err)
		}
		if stored > 0 || accepted > 0 {
			if _, err := tx.ExecContext(ctx, `INSERT INTO publishers (peer_id, used_bytes, uploads, last_upload) VALUES (?, ?, ?, ?)
				ON CONFLICT (peer_id) DO UPDATE SET used_bytes = publishers.used_bytes + excluded.used_bytes,
					uploads = publishers.uploads + excluded.uploads,
					last_upload = CASE WHEN excluded.uploads > 0 THEN excluded.last_upload ELSE publishers.last_upload END`,
				p.String(), stored, accepted, last); err != nil {
				return fmt.Errorf("origin: settle quota: %w", err)
			}
		}
		for _, root := range roots {
			if _, err := tx.ExecContext(ctx, `INSERT INTO roots (cid, created_at) VALUES (?, ?) ON CONFLICT (cid) DO NOTHING`,
				root.String(), now.Unix()); err != nil {
				return fmt.Errorf("origin: record root %s: %w", root, err)
			}
			res, err := tx.ExecContext(ctx, `INSERT INTO root_publishers (root, publisher, created_at) VALUES (?, ?, ?)
				ON CONFLICT (root, publisher) DO NOTHING`, root.String(), p.String(), now.Unix())
			if err != nil {
				return fmt.Errorf("origin: record root %s: %w", root, err)
			}
			if n, err := res.RowsAffected(); err == nil && n > 0 {
				// A new uploader of the root: billing's payer is the first.
				if err := origindb.AppendEvent(ctx, tx, originapi.BillingEvent{Kind: originapi.EventUpload, Root: root.String(),
					Publisher: p.String(), At: now}); err != nil {
					return err
				}
			}
		}
		if err := tx.QueryRowContext(ctx, `SELECT `+usedSQL, p.String(), p.String(), dbNow.UnixNano()).Scan(&used); err != nil {
			return fmt.Errorf("origin: settle quota: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return used, nil
}

// Usage returns what publisher p has stored at the origin. A key that
// never uploaded has zero usage.
func (o *Origin) Usage(ctx context.Context, p peer.ID) (*originapi.PublisherUsage, error) {
	u := &originapi.PublisherUsage{Publisher: p.String(), QuotaBytes: o.cfg.PublisherQuota}
	now, err := o.db.Now(ctx)
	if err != nil {
		return nil, fmt.Errorf("origin: usage of %s: %w", p, err)
	}
	var last int64
	err = o.db.QueryRowContext(ctx, `SELECT `+usedSQL+`,
			COALESCE((SELECT uploads FROM publishers WHERE peer_id = ?), 0),
			COALESCE((SELECT last_upload FROM publishers WHERE peer_id = ?), 0),
			(SELECT count(*) FROM root_publishers rp WHERE rp.publisher = ?)`,
		p.String(), p.String(), now.UnixNano(), p.String(), p.String(), p.String()).Scan(&u.UsedBytes, &u.Uploads, &last, &u.Roots)
	if err != nil {
		return nil, fmt.Errorf("origin: usage of %s: %w", p, err)
	}
	if last != 0 {
		t := time.Unix(0, last).UTC()
		u.LastUpload = &t
	}
	return u, nil
}

func (o *Origin) serveUsage(w http.ResponseWriter, r *http.Request) {
	p, err := peer.Decode(r.PathValue("peer"))
	if err != nil {
		o.fail(w, errorf(ErrBadRequest, "%q is not a peer ID: %v", r.PathValue("peer"), err))
		return
	}
	u, err := o.Usage(r.Context(), p)
	if err != nil {
		o.fail(w, err)
		return
	}
	httpkit.WriteJSON(w, http.StatusOK, u)
}
