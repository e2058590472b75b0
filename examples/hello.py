"""A first program for rsandbox: shows who and where it runs."""
import os
import socket

print("hello from rsandbox")
print(f"uid={os.getuid()} pid={os.getpid()} cwd={os.getcwd()} host={socket.gethostname()}")
print("root:", " ".join(sorted(os.listdir("/"))))
