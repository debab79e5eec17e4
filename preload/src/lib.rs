//! librbypass.so: the LD_PRELOAD library that will interpose the BSD socket API.
