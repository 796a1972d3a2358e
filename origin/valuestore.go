package origin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/ipfs/boxo/gateway"
	"github.com/ipfs/boxo/ipns"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/topcdn/topcdn/internal/valuestore"
	"github.com/topcdn/topcdn/originapi"
)

// valueStore serves the origin's IPNS records to boxo's gateway and name
// system, as a routing.ValueStore.
type valueStore struct{ o *Origin }

func (v valueStore) PutValue(ctx context.Context, key string, value []byte, _ ...routing.Option) error {
	name, err := ipns.NameFromRoutingKey([]byte(key))
	if err != nil {
		return fmt.Errorf("origin: %w", err)
	}
	_, err = v.o.PutRecord(ctx, name, value)
	return err
}

func (v valueStore) GetValue(ctx context.Context, key string, _ ...routing.Option) ([]byte, error) {
	name, err := ipns.NameFromRoutingKey([]byte(key))
	if err != nil {
		return nil, fmt.Errorf("origin: %w", err)
	}
	raw, err := v.o.record(ctx, name)
	if errors.Is(err, ErrNotFound) {
		// A 404 from the gateway; still routing.ErrNotFound to namesys.
		return nil, gateway.NewErrorStatusCode(fmt.Errorf("no IPNS record for %s: %w", name, routing.ErrNotFound), http.StatusNotFound)
	}
	return raw, err
}

func (v valueStore) SearchValue(ctx context.Context, key string, opts ...routing.Option) (<-chan []byte, error) {
	return valuestore.Search(ctx, v, key, opts...)
}

// lookupDNSLink answers DNSLink TXT lookups for human names from the names
// table, so /ipns/blog resolves like /ipns/<k51…> at the origin.
func (o *Origin) lookupDNSLink(ctx context.Context, fqdn string) ([]string, time.Duration, error) {
	label := strings.TrimSuffix(strings.TrimPrefix(fqdn, "_dnslink."), ".")
	if originapi.ValidateName(label) != nil {
		return nil, 0, fmt.Errorf("origin: %q is not a published name: %w", label, ErrNotFound)
	}
	key, err := o.nameTarget(ctx, label)
	if err != nil {
		return nil, 0, err
	}
	return []string{"dnslink=/ipns/" + key}, time.Minute, nil
}

var _ routing.ValueStore = valueStore{}
