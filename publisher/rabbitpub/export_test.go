package rabbitpub

// Retries returns how many times p published a message again.
func Retries(p *Publisher) int64 { return p.retries.Load() }
