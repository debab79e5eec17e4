/* client writes 4 MiB and exits without close; server must read all and EOF */
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc,char**argv){ int port=atoi(argv[2]);
 struct sockaddr_in a={0}; a.sin_family=AF_INET; a.sin_port=htons(port); a.sin_addr.s_addr=htonl(INADDR_LOOPBACK);
 static char b[1<<16];
 if(!strcmp(argv[1],"server")){ int l=socket(AF_INET,SOCK_STREAM,0); int one=1; setsockopt(l,SOL_SOCKET,SO_REUSEADDR,&one,4); bind(l,(void*)&a,sizeof a); listen(l,4); printf("listening\n"); fflush(stdout);
   int s=accept(l,0,0); long tot=0; int g; while((g=read(s,b,sizeof b))>0) tot+=g; printf("server got %ld eof=%d\n",tot,g); return 0; }
 int s=socket(AF_INET,SOCK_STREAM,0); if(connect(s,(void*)&a,sizeof a)){perror("connect");return 1;}
 memset(b,7,sizeof b); long tot=0; for(int i=0;i<64;i++){ int w=write(s,b,sizeof b); if(w<0){perror("write");return 1;} tot+=w;} printf("client wrote %ld\n",tot); return 0; }
