//! TEMPORARY placeholder until the transcribe client lands.
