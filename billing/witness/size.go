package witness

import "context"

// SiteBytes returns the bytes of every block of the DAG under root, each
// counted once, from the origin's CAR of it (billing's Sizer: the bytes
// one client could fetch of the site). It fails as Object does for a root
// the origin does not serve.
func (o *OriginContent) SiteBytes(ctx context.Context, root string) (int64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	s, err := o.site(ctx, root)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, b := range s.blocks {
		n += b.size
	}
	return n, nil
}
