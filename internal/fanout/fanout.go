// Package fanout holds what the observer lists of publisher, consumer and
// outbox share: flattening the observers given to a JoinObservers.
package fanout

// Flatten returns the observers of obs in order without the nil ones, with
// those that are themselves lists (of type L) spread in their place.
func Flatten[O any, L ~[]O](obs []O) L {
	var all L
	for _, o := range obs {
		switch o := any(o).(type) {
		case nil:
		case L:
			all = append(all, o...)
		default:
			all = append(all, o.(O))
		}
	}
	return all
}
