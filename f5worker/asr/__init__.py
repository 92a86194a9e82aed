"""The ASR companion (#23): one small speech-recognition model beside the TTS engine, for
references sent without a transcript, verification of generated chunks and word timings."""
