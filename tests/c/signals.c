/* SO_RCVTIMEO, EINTR from a blocking recv (no SA_RESTART), handler calling send */
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <errno.h>
#include <unistd.h>
#include <sys/time.h>
static int g_fd=-1; static volatile int fired=0;
static void h(int s){ (void)s; fired++; if(g_fd>=0) send(g_fd,"S",1,MSG_NOSIGNAL); }
int main(int argc,char**argv){ int port=atoi(argv[1]);
 struct sockaddr_in a={0}; a.sin_family=AF_INET; a.sin_port=htons(port); a.sin_addr.s_addr=htonl(INADDR_LOOPBACK);
 int l=socket(AF_INET,SOCK_STREAM,0); int one=1; setsockopt(l,SOL_SOCKET,SO_REUSEADDR,&one,4); bind(l,(void*)&a,sizeof a); listen(l,4);
 int c=socket(AF_INET,SOCK_STREAM,0); if(connect(c,(void*)&a,sizeof a)){perror("connect");return 1;} int s=accept(l,0,0);
 struct timeval tv={0,200000}; setsockopt(s,SOL_SOCKET,SO_RCVTIMEO,&tv,sizeof tv);
 char b[8]; int r=recv(s,b,8,0); printf("rcvtimeo r=%d errno=%s\n",r,r<0&&errno==EAGAIN?"EAGAIN":strerror(errno));
 struct sigaction sa; memset(&sa,0,sizeof sa); sa.sa_handler=h; sigaction(SIGALRM,&sa,0); g_fd=c;
 struct itimerval it={{0,0},{0,100000}}; setitimer(ITIMER_REAL,&it,0);
 tv.tv_sec=5; setsockopt(s,SOL_SOCKET,SO_RCVTIMEO,&tv,sizeof tv);
 /* Linux: the handler runs, then recv returns EINTR... unless data came first: the handler sent "S". */
 r=recv(s,b,8,0); printf("after alarm r=%d fired=%d\n",r,fired);
 if(r<0) printf("errno=%s\n",errno==EINTR?"EINTR":strerror(errno));
 r=recv(s,b,8,0); printf("then r=%d %c\n",r,r>0?b[0]:'-');
 return 0; }
