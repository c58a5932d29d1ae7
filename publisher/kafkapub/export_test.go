package kafkapub

// Retries returns how many times p wrote a record again.
func Retries(p *Publisher) int64 { return p.retries.Load() }
